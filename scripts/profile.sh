#!/usr/bin/env bash
# Instructions per frame of one benchmark server, with callgrind.
#
#   scripts/profile.sh [RT] [STACK] [SCENARIO] [INFLIGHT] [SECS]
#   scripts/profile.sh tokio api oneway 64 8
#   MODE=signed scripts/profile.sh tokio api oneway 64 8   # signing on (plain, signed, signed-hmac, sealed)
#
# Runs `jsonlink-bench server` under `valgrind --tool=callgrind` (pinned to
# CPU 1) and the matching client natively (CPU 0) for SECS seconds, then
# prints the server's user-space instructions, the frames it handled (calls
# to `Connection::handle_line`, or for the raw stack to serde_json's
# `from_trait` (its line parse); set FRAME_FN to count another function) and their
# ratio. Deterministic to a few percent, unlike wall-clock figures on a
# shared machine. Needs valgrind (`apt-get install valgrind`). The profile
# stays in $OUT (default /tmp/jsonlink-profile) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
RT=${1:-tokio}
STACK=${2:-api}
SCENARIO=${3:-oneway}
INFLIGHT=${4:-64}
SECS=${5:-8}
OUT=${OUT:-/tmp/jsonlink-profile}
mkdir -p "$OUT"
cargo build --release -p jsonlink-bench --locked >/dev/null 2>&1
B=target/release/jsonlink-bench
DIR=$($B certs)
PROFILE="$OUT/callgrind.$RT.$STACK.$SCENARIO.${MODE:-plain}.out"
rm -f "$PROFILE"
taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$PROFILE" \
  "$B" server --rt "$RT" --stack "$STACK" --mode ${MODE:-plain} --dir "$DIR" \
  >"$OUT/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do
  grep -q '^PORT ' "$OUT/server.log" && break
  sleep 0.2
done
PORT=$(grep -o '^PORT [0-9]*' "$OUT/server.log" | cut -d' ' -f2)
taskset -c 0 "$B" client --rt "$RT" --stack "$STACK" --mode ${MODE:-plain} --dir "$DIR" \
  --port "$PORT" --scenario "$SCENARIO" --inflight "$INFLIGHT" --secs "$SECS" --warmup 1
kill -TERM "$SERVER" 2>/dev/null || true
wait "$SERVER" 2>/dev/null || true
rm -rf "$DIR"
if [ "$STACK" = raw ]; then
  FRAME_FN=${FRAME_FN:-serde_json::de::from_trait}
else
  FRAME_FN=${FRAME_FN:-Connection::handle_line}
fi
python3 - "$PROFILE" "$FRAME_FN" <<'EOF'
import re, sys
names, total, frames, cur_cfn = {}, 0, 0, None
target = re.compile(re.escape(sys.argv[2]))
for line in open(sys.argv[1], errors='replace'):
    if line.startswith('summary:') or line.startswith('totals:'):
        total = max(total, int(line.split()[1]))
    m = re.match(r'c?fn=\((\d+)\)(?: (.*))?', line)
    if m:
        fid, name = m.group(1), m.group(2)
        if name:
            names[fid] = name
        cur_cfn = fid if line.startswith('cfn=') else None
        continue
    if line.startswith('calls=') and cur_cfn and target.search(names.get(cur_cfn, '')):
        frames += int(line.split()[0].split('=')[1])
print(f"server instructions: {total:,}")
print(f"frames handled: {frames:,}")
if frames:
    print(f"instructions per frame: {total / frames:,.0f}")
EOF
