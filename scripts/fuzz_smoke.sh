#!/usr/bin/env bash
# Fuzz smoke: runs every cargo-fuzz target for N seconds (default 30) on the
# checked-in corpus and regressions, without a sanitizer (several times
# faster), and fails on the first crash. New inputs go to a temporary
# directory, not into the checkout. Needs cargo-fuzz (.ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-30}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# cargo-fuzz's instrumentation flags are nightly-only; unlock them on stable.
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
for t in framer handshake_server handshake_client session relay; do
    mkdir -p "$tmp/$t"
    dirs=("$tmp/$t" "corpus/$t")
    [ -d "regressions/$t" ] && dirs+=("regressions/$t")
    echo "== fuzz $t for ${secs}s"
    rc=0
    cargo fuzz run -s none "$t" "${dirs[@]}" -- \
        -max_total_time="$secs" -timeout=20 -print_final_stats=1 >"$tmp/$t.log" 2>&1 || rc=$?
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$tmp/$t.log" || true
    if [ "$rc" -ne 0 ]; then
        tail -n 40 "$tmp/$t.log" >&2
        echo "fuzz $t failed (exit $rc); the input is in fuzz/artifacts/$t" >&2
        exit 1
    fi
done
