#!/usr/bin/env bash
# The project's test command: formatting, lints, every test (including the
# fuzz-corpus replay and the fault table), and the sans-IO purity check.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== purity: proto/src has no runtime, socket, thread or clock"
if grep -rnE '\b(tokio|async_std|smol)\b|std::net|std::thread|Instant::now|SystemTime::now' proto/src; then
    echo "proto/src must stay sans-IO" >&2
    exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test (recording fault-case outcomes)"
export JSONLINK_FAULT_RESULTS="$PWD/target/fault-results"
rm -rf "$JSONLINK_FAULT_RESULTS"
cargo test --workspace --locked

echo "== fault table: tests/faults/expected.md"
cargo run -q --locked -p jsonlink-tests --bin fault_table -- tests/faults/expected.md "$JSONLINK_FAULT_RESULTS"
