#!/usr/bin/env bash
# Where a pending poll's time goes: runs AuthGate (built with symbols) under callgrind, seeds
# pending codes, polls them with wrk, and prints the functions with the largest inclusive
# instruction counts. Instruction counts are repeatable whatever else the machine is doing.
#   scripts/profile-poll.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECS=${1:-10}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --profile profiling --locked -q -p authgate -p authgate-bench
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/authgate-profile.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
env -i PATH="$PATH" SERVER_ADDR="127.0.0.1:$PORT" DATABASE_PATH="$WORK/p.redb" POLLING_INTERVAL=1s \
    ADMIN_PASSWORD=profile-password LOG_LEVEL="${LOG_LEVEL:-warn}" DEVICE_CODE_RATE_LIMIT=1000000 \
    valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" "$TARGET/profiling/authgate" server \
    >"$WORK/server.log" 2>&1 &
VG=$!
trap 'kill $VG 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 600); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break; sleep 0.1; done
CLIENT=$(grep -o 'client_id=[0-9a-f-]*' "$WORK/server.log" | head -1 | cut -d= -f2)
"$TARGET/profiling/authgate-bench" codes --server "http://127.0.0.1:$PORT" --client-id "$CLIENT" \
    --count 5000 --concurrency 8 --out "$WORK/codes.txt" >/dev/null
# Count only the polls: reset the counters, poll, dump.
callgrind_control -z "$VG" >/dev/null
RESULT=$(WRK_THREADS=1 CODES_FILE="$WORK/codes.txt" CLIENT_ID="$CLIENT" \
    wrk -t1 -c8 -d"${SECS}s" -s "$ROOT/scripts/wrk/poll.lua" "http://127.0.0.1:$PORT" | grep RESULT)
echo "$RESULT"
POLLS=$(echo "$RESULT" | sed -E 's/.* requests=([0-9]+).*/\1/')
callgrind_control -d "$VG" >/dev/null
sleep 1
OUT=$WORK/polls.callgrind
cp "$(ls -t "$WORK"/callgrind.out* | head -1)" "$OUT"
kill -TERM $VG; wait $VG 2>/dev/null || true
# KEEP=path keeps the profile for callgrind_annotate (e.g. --tree=caller) or kcachegrind.
[ -n "${KEEP:-}" ] && cp "$OUT" "$KEEP"
# `grep -m1` and `head` close their pipes early; that is not a failure.
set +o pipefail
TOTAL=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ && t == "" {t = $1} END {gsub(/,/, "", t); print t}')
if [ "${POLLS:-0}" -gt 0 ] && [ -n "$TOTAL" ]; then
    echo "Instructions per pending poll (LOG_LEVEL=${LOG_LEVEL:-warn}): $((TOTAL / POLLS)) ($TOTAL over $POLLS polls)"
else
    echo "no polls were answered; see $WORK/server.log" >&2
fi
echo "Top inclusive costs (instructions) while polling:"
callgrind_annotate --inclusive=yes --threshold=100 "$OUT" 2>/dev/null | grep -E '^\s*[0-9,]+ \(' | sed -E 's#/root/.cargo/registry/src/[^/]+/##; s#/rustc/[0-9a-f]+/##' | head -${TOP:-45}
echo "Exclusive (self) costs:"
callgrind_annotate --threshold=100 "$OUT" 2>/dev/null | grep -E '^\s*[0-9,]+ \(' | sed -E 's#/root/.cargo/registry/src/[^/]+/##; s#/rustc/[0-9a-f]+/##' | head -${TOP:-25}
