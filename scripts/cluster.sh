#!/usr/bin/env bash
# Several AuthGate instances on one PostgreSQL database, on this machine, for trying out
# the cluster mode: a throwaway PostgreSQL (scripts/pg.sh: Debian's package, a temporary
# directory, a Unix socket) and N instances (default 3) on ports 8081, 8082, ... Everything
# stops, and the temporary directory goes, on Ctrl-C.
#
#   scripts/cluster.sh [N]
#
# Uses target/release/authgate (built first if missing). The admin password is in
# $dir/authgate.admin-password; the client id is in the first instance's log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

n=${1:-3}
case "$n" in ''|*[!0-9]*) echo "usage: scripts/cluster.sh [N]" >&2; exit 2 ;; esac
BIN=${AUTHGATE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/authgate}
if [ ! -x "$BIN" ]; then
    echo "Building $BIN..." >&2
    cargo build --release --locked --bin authgate
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

dir=$(mktemp -d /tmp/authgate-cluster.XXXXXX)
chmod 755 "$dir" # the postgres user reaches its data directory through it
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    "$ROOT/scripts/pg.sh" stop "$dir/pg"
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

"$ROOT/scripts/pg.sh" start "$dir/pg" >/dev/null
psql -q -h "$dir/pg" -U postgres -c "CREATE DATABASE authgate" postgres
dsn="host=$dir/pg user=postgres dbname=authgate"

for i in $(seq 1 "$n"); do
    port=$((8080 + i))
    (
        cd "$dir"
        DATABASE_DRIVER=postgres DATABASE_DSN="$dsn" SERVER_ADDR="127.0.0.1:$port" \
            BASE_URL="http://localhost:8081" exec "$BIN" server >"$dir/instance-$i.log" 2>&1
    ) &
    pids+=($!)
    # The first instance creates the schema, the secrets and the admin; the others find them.
    if [ "$i" = 1 ]; then
        for _ in $(seq 1 100); do
            curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
            sleep 0.1
        done
    fi
done
for i in $(seq 1 "$n"); do
    port=$((8080 + i))
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
        sleep 0.1
    done
    echo "instance $i: http://127.0.0.1:$port (log: $dir/instance-$i.log)"
done
echo "PostgreSQL: psql -h $dir/pg -U postgres authgate"
echo "admin password: $(cat "$dir/authgate.admin-password" 2>/dev/null || echo '(see the log)')"
grep -ho 'client_id=[^ ]*' "$dir/instance-1.log" | head -1 || true
echo "Ctrl-C stops everything."
while :; do sleep 3600; done
