#!/usr/bin/env bash
# AuthGate's benchmark: builds release, starts everything on loopback, runs bounded loads and
# prints one table, every scenario measured side by side in the same run.
#
#   scripts/bench.sh                 full run (about 6 minutes; installs wrk, and npm's
#                                    oidc-provider into a temporary folder for the peer)
#   scripts/bench.sh --quick         CI-sized run (about a minute after the build): 2 s loads,
#                                    a small fleet, no peer; fails on a wrong response mix or
#                                    any error, never on a timing
#   options: --devices N (fleet size, default 10000), --duration S (per load, default 10),
#            --codes N (pending set, default 100000; it must be large enough that wrk's
#            rate never polls one code faster than the 1 s interval), --no-peer, --no-million,
#            --no-postgres (skip the PostgreSQL backend's rows; they start a throwaway
#            PostgreSQL with fsync on through scripts/pg.sh)
#
# Ratios compare figures of this run only. Server CPU comes from /proc/PID/stat over the
# load; the load generator's CPU from its own user+system time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0 DEVICES=10000 DUR=10 CODES=100000 PEER=1 MILLION=1 POSTGRES=1 IDLE=10000
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 DEVICES=300 DUR=2 PEER=0 MILLION=0 IDLE=500 ;;
        --devices) DEVICES=$2; shift ;;
        --duration) DUR=$2; shift ;;
        --codes) CODES=$2; shift ;;
        --no-peer) PEER=0 ;;
        --no-million) MILLION=0 ;;
        --no-postgres) POSTGRES=0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

WORK=$(mktemp -d /tmp/authgate-bench.XXXXXX)
chmod 755 "$WORK" # the postgres user reaches its data directory through it
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -d "$WORK/pg" ]; then "$ROOT/scripts/pg.sh" stop "$WORK/pg"; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
for tool in wrk curl python3; do need "$tool" || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}..." >&2
    as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "building release..." >&2
cargo build --release --locked -q -p authgate -p authgate-bench
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/authgate
BENCH=$TARGET/release/authgate-bench
PW=bench-admin-password
TICK=$(getconf CLK_TCK)
ROWS=$WORK/rows.tsv
NOTES=$WORK/notes.txt
FAIL=0
: >"$ROWS"; : >"$NOTES"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/{print $2}' "/proc/$1/status"; }
note() { echo "$*" | tee -a "$NOTES" >&2; }
fail() { note "FAIL: $*"; FAIL=1; }

wait_health() { # port → seconds waited
    local t0; t0=$(date +%s.%N)
    for _ in $(seq 1 3000); do
        if curl -fs "http://127.0.0.1:$1/health" >/dev/null 2>&1; then
            awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{printf "%.2f", a-b}'
            return 0
        fi
        sleep 0.01
    done
    return 1
}

# start_authgate NAME [VAR=value ...]: sets AG_PID, AG_PORT, AG_URL, AG_CLIENT.
start_authgate() {
    local name=$1; shift
    AG_PORT=$(free_port)
    # From $WORK with a clean environment: no developer's .env or settings leak into a run.
    (cd "$WORK" && exec env -i PATH="$PATH" SERVER_ADDR="127.0.0.1:$AG_PORT" DATABASE_PATH="$WORK/$name.redb" \
        POLLING_INTERVAL=1s ADMIN_PASSWORD=$PW LOG_LEVEL=info LOG_FORMAT=text \
        DEVICE_CODE_RATE_LIMIT=1000000 LOGIN_FAILURE_LIMIT=10000 USER_CODE_FAILURE_LIMIT=10000 MAX_CONNECTIONS=100000 MAX_INFLIGHT=100000 "$@" \
        "$BIN" server >"$WORK/$name.log" 2>&1) &
    AG_PID=$!
    PIDS+=("$AG_PID")
    AG_STARTUP=$(wait_health "$AG_PORT") || { cat "$WORK/$name.log" >&2; exit 1; }
    AG_URL="http://127.0.0.1:$AG_PORT"
    # Seeding (and so the client_id line) happens on a database's first start only.
    local seeded
    seeded=$(grep -o "client_id=[0-9a-f-]*" "$WORK/$name.log" | head -1 | cut -d= -f2 || true)
    [ -n "$seeded" ] && AG_CLIENT=$seeded
    return 0
}
stop_pid() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# wrk_run SCENARIO TARGET PID URL CONNS SCRIPT [VAR=value ...] → appends a row; sets RPS, P99.
wrk_run() {
    local scenario=$1 target=$2 pid=$3 url=$4 conns=$5 script=$6; shift 6
    local c0 out c1
    RPS=0 P99=0 SRV_US=0 MIX_OK=0 MIX_SLOW=0 MIX_OTHER=0 MIX_5XX=0 MIX_SOCK=0
    c0=$(cpu_ticks "$pid") || { fail "$scenario/$target: the process is gone"; return; }
    out=$( { TIMEFORMAT='%U %S'; time env WRK_THREADS=2 "$@" wrk -t2 -c"$conns" -d"${DUR}s" --timeout 5s -s "$ROOT/scripts/wrk/$script" "$url" 2>&1; } 2>&1 ) || true
    c1=$(cpu_ticks "$pid") || { fail "$scenario/$target: the process died under load"; return; }
    local res wrkcpu
    res=$(grep '^RESULT' <<<"$out" || true)
    wrkcpu=$(tail -1 <<<"$out")
    [ -n "$res" ] || { echo "$out" >&2; fail "$scenario/$target: wrk gave no result"; return; }
    get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$res"; }
    local req secs ok slow other s5 sock
    req=$(get requests); secs=$(get seconds); RPS=$(get rps); P99=$(get p99_us)
    [ "${req:-0}" -gt 0 ] || { fail "$scenario/$target: no request completed"; return; }
    ok=$(get pending); slow=$(get slow_down); other=$(get other); s5=$(get server_errors); sock=$(get socket_errors)
    local srv_s us_req srv_pct gen_pct
    srv_s=$(awk -v a="$c0" -v b="$c1" -v t="$TICK" 'BEGIN{print (b-a)/t}')
    us_req=$(awk -v s="$srv_s" -v n="$req" 'BEGIN{print s*1000000/n}')
    srv_pct=$(awk -v s="$srv_s" -v d="$secs" 'BEGIN{print s*100/d}')
    gen_pct=$(awk -v u="${wrkcpu% *}" -v s="${wrkcpu#* }" -v d="$secs" 'BEGIN{printf "%.0f", (u+s)*100/d}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.0f%%\t%s%%\t%s\n' "$scenario" "$target" "$conns" "$RPS" \
        "$(get p50_us)" "$P99" "$(get p999_us)" "$us_req" "$srv_pct" "$gen_pct" \
        "ok=$ok slow_down=$slow other=$other 5xx=$s5 sock_err=$sock" >>"$ROWS"
    MIX_OK=$ok MIX_SLOW=$slow MIX_OTHER=$other MIX_5XX=$s5 MIX_SOCK=$sock SRV_US=$us_req
}

# ---------------------------------------------------------------- floor and pending polls
FLOOR_PORT=$(free_port)
"$BENCH" floor --addr "127.0.0.1:$FLOOR_PORT" 2>/dev/null &
FLOOR_PID=$!; PIDS+=("$FLOOR_PID")
start_authgate poll
POLL_PID=$AG_PID POLL_URL=$AG_URL POLL_CLIENT=$AG_CLIENT
echo "creating $CODES pending device codes..." >&2
"$BENCH" codes --server "$POLL_URL" --client-id "$POLL_CLIENT" --count "$CODES" --concurrency 256 --out "$WORK/codes.txt" >"$WORK/codes.out"
note "seeding: $(cat "$WORK/codes.out")"

declare -A FLOOR_RPS FLOOR_P99 FLOOR_US POLL_RPS POLL_P99 POLL_US
for c in 64 256; do
    sleep 1
    wrk_run "floor" "floor" "$FLOOR_PID" "http://127.0.0.1:$FLOOR_PORT" "$c" poll.lua CODES_FILE="$WORK/codes.txt" CLIENT_ID="$POLL_CLIENT"
    FLOOR_RPS[$c]=$RPS FLOOR_P99[$c]=$P99 FLOOR_US[$c]=$SRV_US
    sleep 1.5 # every code's interval has passed since any earlier poll
    wrk_run "pending poll" "authgate" "$POLL_PID" "$POLL_URL" "$c" poll.lua CODES_FILE="$WORK/codes.txt" CLIENT_ID="$POLL_CLIENT"
    POLL_RPS[$c]=$RPS POLL_P99[$c]=$P99 POLL_US[$c]=$SRV_US
    [ "$MIX_OTHER$MIX_5XX$MIX_SOCK" = "000" ] || fail "pending poll at $c connections: unexpected answers (other=$MIX_OTHER 5xx=$MIX_5XX socket=$MIX_SOCK)"
    [ "$MIX_SLOW" = 0 ] || fail "pending poll at $c connections: $MIX_SLOW slow_down answers (the set is polled faster than its interval)"
    [ "$MIX_OK" -gt 0 ] || fail "pending poll at $c connections: no authorization_pending answers"
done

# ---------------------------------------------------------------- idle keep-alive connections
# Fresh processes (no earlier load's freed memory to reuse), one request on each connection,
# then resident memory per open connection.
# The soft descriptor limit only, up to the hard one (lowering the hard limit is for good).
want=$((IDLE * 2 + 1024)); hard=$(ulimit -Hn)
[ "$hard" != unlimited ] && [ "$hard" -lt "$want" ] && want=$hard
[ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$want" ] && ulimit -Sn "$want"
[ "$want" -ge $((IDLE + 1024)) ] || fail "idle connections: the descriptor limit ($want) is too low for $IDLE connections"
IDLE_FLOOR_PORT=$(free_port)
"$BENCH" floor --addr "127.0.0.1:$IDLE_FLOOR_PORT" 2>/dev/null &
IDLE_FLOOR_PID=$!; PIDS+=("$IDLE_FLOOR_PID")
start_authgate idle
IDLE_AG_PID=$AG_PID IDLE_AG_URL=$AG_URL
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$IDLE_FLOOR_PORT") 2>/dev/null && break; sleep 0.05; done
idle_run() { # TARGET PID ADDR → sets IDLE_BYTES
    local out; out=$("$BENCH" idle --server "$3" --pid "$2" --connections "$IDLE") || { fail "idle connections ($1): $out"; IDLE_BYTES=0; return; }
    IDLE_BYTES=$(sed -n 's/.* bytes_per_connection=\([0-9]*\).*/\1/p' <<<"$out")
    local n open; n=$(sed -n 's/.* connections=\([0-9]*\).*/\1/p' <<<"$out"); open=$(sed -n 's/.* open=\([0-9]*\).*/\1/p' <<<"$out")
    [ "$n" = "$IDLE" ] && [ "$open" = "$IDLE" ] || fail "idle connections ($1): $out"
    note "idle connections ($1): $out"
}
idle_run floor "$IDLE_FLOOR_PID" "127.0.0.1:$IDLE_FLOOR_PORT"; IDLE_FLOOR_BYTES=$IDLE_BYTES
idle_run authgate "$IDLE_AG_PID" "$IDLE_AG_URL"; IDLE_AG_BYTES=$IDLE_BYTES
stop_pid "$IDLE_FLOOR_PID"; stop_pid "$IDLE_AG_PID"

# ---------------------------------------------------------------- token checks
TOKEN=$("$BENCH" token --server "$POLL_URL" --client-id "$POLL_CLIENT" --password "$PW")
for c in 64 256; do
    wrk_run "tokeninfo" "authgate" "$POLL_PID" "$POLL_URL" "$c" count.lua REQ_PATH=/oauth/tokeninfo AUTHORIZATION="Bearer $TOKEN"
    [ "$MIX_OTHER$MIX_5XX$MIX_SOCK" = "000" ] && [ "$MIX_OK" -gt 0 ] || fail "tokeninfo at $c: not every answer was 200"
done

# ---------------------------------------------------------------- logins beside polls
curl -s -c "$WORK/jar" "$POLL_URL/login" >"$WORK/login.html"
CSRF=$(sed -n 's/.*name="csrf_token" value="\([^"]*\)".*/\1/p' "$WORK/login.html" | head -1)
CSRF_COOKIE=$(awk '$6=="authgate_csrf"{print $7}' "$WORK/jar")
sleep 1.5
wrk_run "poll, no logins" "authgate" "$POLL_PID" "$POLL_URL" 64 poll.lua CODES_FILE="$WORK/codes.txt" CLIENT_ID="$POLL_CLIENT"
BASE_P99=$P99
sleep 1.5
env WRK_THREADS=1 METHOD=POST REQ_PATH=/login CONTENT_TYPE=application/x-www-form-urlencoded EXPECT=303 \
    COOKIE="authgate_csrf=$CSRF_COOKIE" BODY="username=admin&password=$PW&csrf_token=$CSRF&next=%2Fdevice" \
    wrk -t1 -c16 -d"${DUR}s" --timeout 10s -s "$ROOT/scripts/wrk/count.lua" "$POLL_URL" >"$WORK/login.out" 2>&1 &
LOGIN_WRK=$!
wrk_run "poll, with logins" "authgate" "$POLL_PID" "$POLL_URL" 64 poll.lua CODES_FILE="$WORK/codes.txt" CLIENT_ID="$POLL_CLIENT"
LOADED_P99=$P99
wait $LOGIN_WRK || true
LOGIN_RES=$(grep '^RESULT' "$WORK/login.out" || true)
LOGIN_RPS=$(sed -n 's/.* rps=\([^ ]*\).*/\1/p' <<<"$LOGIN_RES")
LOGIN_OK=$(sed -n 's/.* pending=\([^ ]*\).*/\1/p' <<<"$LOGIN_RES")
LOGIN_P99=$(sed -n 's/.* p99_us=\([^ ]*\).*/\1/p' <<<"$LOGIN_RES")
printf 'logins (alongside)\tauthgate\t16\t%s\t-\t%s\t-\t-\t-\t-\tok(303)=%s\n' "$LOGIN_RPS" "$LOGIN_P99" "$LOGIN_OK" >>"$ROWS"
[ -n "$LOGIN_OK" ] && [ "$LOGIN_OK" -gt 0 ] || fail "no successful logins under load"

# ---------------------------------------------------------------- PostgreSQL: pending polls
PG_DIR=$WORK/pg
pgdsn() { echo "host=$PG_DIR user=postgres dbname=$1"; }
pgdb() { psql -q -h "$PG_DIR" -U postgres -c "CREATE DATABASE $1" postgres; }
if [ $POSTGRES = 1 ]; then
    echo "starting PostgreSQL (fsync on)..." >&2
    PG_FSYNC=on "$ROOT/scripts/pg.sh" start "$PG_DIR" >/dev/null
    pgdb pgpoll
    start_authgate pg-poll DATABASE_DRIVER=postgres DATABASE_DSN="$(pgdsn pgpoll)"
    PGPOLL_PID=$AG_PID PGPOLL_URL=$AG_URL PGPOLL_CLIENT=$AG_CLIENT
    echo "creating $CODES pending device codes on PostgreSQL..." >&2
    "$BENCH" codes --server "$PGPOLL_URL" --client-id "$PGPOLL_CLIENT" --count "$CODES" --concurrency 256 --out "$WORK/pg-codes.txt" >"$WORK/pg-codes.out"
    note "seeding (postgres): $(cat "$WORK/pg-codes.out")"
    # Side by side: redb, then PostgreSQL, at 256 connections.
    sleep 1.5
    wrk_run "pending poll (redb, again)" "authgate" "$POLL_PID" "$POLL_URL" 256 poll.lua CODES_FILE="$WORK/codes.txt" CLIENT_ID="$POLL_CLIENT"
    REDB_AGAIN_RPS=$RPS
    sleep 1.5
    wrk_run "pending poll (postgres)" "authgate" "$PGPOLL_PID" "$PGPOLL_URL" 256 poll.lua CODES_FILE="$WORK/pg-codes.txt" CLIENT_ID="$PGPOLL_CLIENT"
    PG_POLL_RPS=$RPS
    [ "$MIX_OTHER$MIX_5XX$MIX_SOCK$MIX_SLOW" = "0000" ] && [ "$MIX_OK" -gt 0 ] || fail "pending poll (postgres): not every answer was authorization_pending"
    stop_pid "$PGPOLL_PID"
fi
stop_pid "$POLL_PID"

# ---------------------------------------------------------------- durable writes
declare -A ISSUE_RPS REDEEM_RATE WPC
for mode in group single; do
    batch=1024; [ $mode = single ] && batch=1
    start_authgate "writes-$mode" STORE_MAX_BATCH=$batch
    wrk_run "code issuance ($mode commit)" "authgate" "$AG_PID" "$AG_URL" 256 count.lua \
        METHOD=POST REQ_PATH=/oauth/device/code CONTENT_TYPE=application/x-www-form-urlencoded BODY="client_id=$AG_CLIENT"
    ISSUE_RPS[$mode]=$RPS
    [ "$MIX_OTHER$MIX_5XX$MIX_SOCK" = "000" ] || fail "code issuance ($mode): errors"
    n=$([ $QUICK = 1 ] && echo 500 || echo 5000)
    out=$("$BENCH" redeem --server "$AG_URL" --client-id "$AG_CLIENT" --password "$PW" --count "$n" --concurrency 256) || fail "redeem ($mode): $out"
    REDEEM_RATE[$mode]=$(sed -n 's/.* rate=\([^ ]*\).*/\1/p' <<<"$out")
    printf 'token redemption (%s commit)\tauthgate\t256\t%s\t-\t-\t-\t-\t-\t-\t%s\n' "$mode" "${REDEEM_RATE[$mode]}" "$out" >>"$ROWS"
    stop_pid "$AG_PID"
    WPC[$mode]=$(sed -n 's/.*writes_per_commit=\([0-9.]*\).*/\1/p' "$WORK/writes-$mode.log" | tail -1)
done

# ---------------------------------------------------------------- PostgreSQL: durable writes
declare -A PG_ISSUE_RPS PG_REDEEM_RATE
if [ $POSTGRES = 1 ]; then
    for mode in group single; do
        batch=1024; [ $mode = single ] && batch=1
        pgdb "pgwrites_$mode"
        start_authgate "pg-writes-$mode" STORE_MAX_BATCH=$batch DATABASE_DRIVER=postgres DATABASE_DSN="$(pgdsn "pgwrites_$mode")"
        wrk_run "code issuance (postgres, $mode commit)" "authgate" "$AG_PID" "$AG_URL" 256 count.lua \
            METHOD=POST REQ_PATH=/oauth/device/code CONTENT_TYPE=application/x-www-form-urlencoded BODY="client_id=$AG_CLIENT"
        PG_ISSUE_RPS[$mode]=$RPS
        [ "$MIX_OTHER$MIX_5XX$MIX_SOCK" = "000" ] || fail "code issuance (postgres, $mode): errors"
        n=$([ $QUICK = 1 ] && echo 500 || echo 5000)
        out=$("$BENCH" redeem --server "$AG_URL" --client-id "$AG_CLIENT" --password "$PW" --count "$n" --concurrency 256) || fail "redeem (postgres, $mode): $out"
        PG_REDEEM_RATE[$mode]=$(sed -n 's/.* rate=\([^ ]*\).*/\1/p' <<<"$out")
        printf 'token redemption (postgres, %s commit)\tauthgate\t256\t%s\t-\t-\t-\t-\t-\t-\t%s\n' "$mode" "${PG_REDEEM_RATE[$mode]}" "$out" >>"$ROWS"
        stop_pid "$AG_PID"
    done
fi

# ---------------------------------------------------------------- fleet
start_authgate fleet DEVICE_CODE_EXPIRATION=2m
echo "fleet of $DEVICES devices..." >&2
if "$BENCH" fleet --server "$AG_URL" --client-id "$AG_CLIENT" --password "$PW" --devices "$DEVICES" >"$WORK/fleet.out" 2>"$WORK/fleet.err"; then :; else
    fail "fleet: $(tail -3 "$WORK/fleet.err")"
fi
FLEET_HWM=$(hwm_kb "$AG_PID")
stop_pid "$AG_PID"

# ---------------------------------------------------------------- memory and start-up
# The baseline is taken after a restart, so first-start seeding (argon2 buffers) is not in it.
start_authgate memory
stop_pid "$AG_PID"
start_authgate memory
RSS0=$(rss_kb "$AG_PID")
MEM_STEPS=$([ $QUICK = 1 ] && echo 5000 || { [ $MILLION = 1 ] && echo "100000 1000000" || echo "100000"; })
have=0
declare -A RSS_AT
for target in $MEM_STEPS; do
    echo "memory: filling to $target pending codes..." >&2
    "$BENCH" codes --server "$AG_URL" --client-id "$AG_CLIENT" --count $((target - have)) --concurrency 256 --out "$WORK/mem.txt" >/dev/null
    have=$target
    sleep 1
    RSS_AT[$target]=$(rss_kb "$AG_PID")
done
stop_pid "$AG_PID"
start_authgate memory
STARTUP=$AG_STARTUP
RSS_RESTART=$(rss_kb "$AG_PID")
stop_pid "$AG_PID"

# ---------------------------------------------------------------- PostgreSQL: two instances, and many tokens
if [ $POSTGRES = 1 ]; then
    pgdb pgfleet
    start_authgate pg-fleet-a DEVICE_CODE_EXPIRATION=2m DATABASE_DRIVER=postgres DATABASE_DSN="$(pgdsn pgfleet)"
    FA_PID=$AG_PID FA_URL=$AG_URL FA_CLIENT=$AG_CLIENT
    start_authgate pg-fleet-b DEVICE_CODE_EXPIRATION=2m DATABASE_DRIVER=postgres DATABASE_DSN="$(pgdsn pgfleet)"
    FB_PID=$AG_PID FB_URL=$AG_URL
    echo "fleet of $DEVICES devices over two instances on PostgreSQL..." >&2
    if "$BENCH" fleet --server "$FA_URL,$FB_URL" --client-id "$FA_CLIENT" --password "$PW" --devices "$DEVICES" >"$WORK/pg-fleet.out" 2>"$WORK/pg-fleet.err"; then :; else
        fail "fleet on two instances: $(tail -3 "$WORK/pg-fleet.err")"
    fi
    PG_FLEET_HWM="$(($(hwm_kb "$FA_PID") / 1024)) / $(($(hwm_kb "$FB_PID") / 1024))"
    stop_pid "$FA_PID"; stop_pid "$FB_PID"

    # Live token records written straight into the database (the rows the token actor
    # loads), then an instance started on it: its start-up time and memory.
    TOKENS=$([ $QUICK = 1 ] && echo 20000 || echo 1000000)
    pgdb pgtokens
    start_authgate pg-tokens DATABASE_DRIVER=postgres DATABASE_DSN="$(pgdsn pgtokens)"
    PG_TOKENS_CLIENT=$AG_CLIENT
    stop_pid "$AG_PID"
    start_authgate pg-tokens DATABASE_DRIVER=postgres DATABASE_DSN="$(pgdsn pgtokens)"
    PG_RSS0=$(rss_kb "$AG_PID")
    stop_pid "$AG_PID"
    echo "writing $TOKENS token records into PostgreSQL..." >&2
    psql -q -h "$PG_DIR" -U postgres -v n="$TOKENS" -v client="$PG_TOKENS_CLIENT" pgtokens <<'SQL'
INSERT INTO tokens (id, authorization_id, token_hash, status, expires_at, record)
SELECT r->>'id', r->>'authorization_id', r->>'token_hash', 'active', 4102444800, r
FROM (
    SELECT jsonb_build_object(
        'id', 'bench-' || g,
        'kind', CASE WHEN g % 2 = 0 THEN 'refresh' ELSE 'access' END,
        'token_hash', CASE WHEN g % 2 = 0 THEN md5(g::text) || md5((-g)::text) END,
        'user_id', 'bench-user-' || (g % 1000), 'username', 'user' || (g % 1000),
        'client_id', :'client', 'scope', 'read write',
        'authorization_id', 'bench-auth-' || (g / 2),
        'issued_at', 1700000000, 'expires_at', 4102444800, 'status', 'active') AS r
    FROM generate_series(1, :n) AS g
) AS rows;
SQL
    start_authgate pg-tokens DATABASE_DRIVER=postgres DATABASE_DSN="$(pgdsn pgtokens)"
    PG_TOKENS_STARTUP=$AG_STARTUP
    sleep 1
    PG_TOKENS_RSS=$(rss_kb "$AG_PID")
    stop_pid "$AG_PID"
fi

# ---------------------------------------------------------------- the peer: node-oidc-provider
PEER_RPS=""
if [ $PEER = 1 ]; then
    if need npm && need node; then
        echo "installing oidc-provider into $WORK/peer..." >&2
        mkdir -p "$WORK/peer"
        cp "$ROOT/scripts/peer/oidc-provider.mjs" "$WORK/peer/"
        if (cd "$WORK/peer" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund oidc-provider@9 >/dev/null 2>&1); then
            PEER_PORT=$(free_port)
            (cd "$WORK/peer" && PORT=$PEER_PORT NODE_ENV=production exec node oidc-provider.mjs >"$WORK/peer.log" 2>&1) &
            PEER_PID=$!; PIDS+=("$PEER_PID")
            PEER_UP=0
            for _ in $(seq 1 500); do
                curl -fs "http://127.0.0.1:$PEER_PORT/.well-known/openid-configuration" >/dev/null 2>&1 && { PEER_UP=1; break; }
                sleep 0.02
            done
            echo "creating $CODES device codes in the peer..." >&2
            if [ $PEER_UP = 0 ]; then
                note "peer: oidc-provider did not start: $(tail -2 "$WORK/peer.log")"
            elif "$BENCH" codes --server "http://127.0.0.1:$PEER_PORT" --client-id bench --path /device/auth --count "$CODES" --concurrency 64 --out "$WORK/peer-codes.txt" >"$WORK/peer-codes.out" 2>&1; then
                note "peer seeding: $(cat "$WORK/peer-codes.out")"
                for c in 64 256; do
                    sleep 1
                    wrk_run "pending poll" "oidc-provider" "$PEER_PID" "http://127.0.0.1:$PEER_PORT" "$c" poll.lua \
                        CODES_FILE="$WORK/peer-codes.txt" CLIENT_ID=bench POLL_PATH=/token
                    PEER_RPS=$RPS
                    if [ "$MIX_OTHER$MIX_5XX$MIX_SLOW" != "000" ]; then
                        note "peer at $c connections: not every answer was authorization_pending (other=$MIX_OTHER 5xx=$MIX_5XX slow_down=$MIX_SLOW); no ratio reported"
                        PEER_RPS=""
                    fi
                done
            else
                note "peer: could not create device codes: $(tail -2 "$WORK/peer-codes.out")"
            fi
            kill "$PEER_PID" 2>/dev/null || true
        else
            note "peer: npm install oidc-provider failed; peer skipped"
        fi
    else
        note "peer: node/npm not found; peer skipped"
    fi
fi

# ---------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 == 0) print "-"; else printf "%.2f", a/b }'; }
echo
echo "## AuthGate benchmark — $(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/model name/{$1=$2=$3="";print;exit}' /proc/cpuinfo | sed 's/^ *//'), duration ${DUR}s per load, wrk -t2"
echo
echo "| scenario | target | conns | req/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/req | server CPU | wrk CPU | answers |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11}' "$ROWS"
echo
echo "| ratio (same run) | value | target |"
echo "|---|---:|---|"
echo "| pending poll / floor, req/s at 256 | $(ratio "${POLL_RPS[256]}" "${FLOOR_RPS[256]}") | ≥ 0.6 |"
echo "| pending poll / floor, p99 at 256 | $(ratio "${POLL_P99[256]}" "${FLOOR_P99[256]}") | ≤ 2 |"
echo "| pending poll / floor, server CPU per request at 256 | $(ratio "${POLL_US[256]}" "${FLOOR_US[256]}") | ≤ 2 |"
echo "| pending poll / floor, req/s at 64 | $(ratio "${POLL_RPS[64]}" "${FLOOR_RPS[64]}") | |"
[ -n "$PEER_RPS" ] && echo "| pending poll / oidc-provider, req/s at 256 | $(ratio "${POLL_RPS[256]}" "$PEER_RPS") | ≥ 10 |"
echo "| poll p99 with logins / without (64 conns) | $(ratio "$LOADED_P99" "$BASE_P99") | ≤ 2 |"
echo "| memory per idle keep-alive connection, authgate / floor ($IDLE_AG_BYTES / $IDLE_FLOOR_BYTES bytes, $IDLE open) | $(ratio "$IDLE_AG_BYTES" "$IDLE_FLOOR_BYTES") | ≤ 1.2 |"
echo "| code issuance, group / single commit (256 conns) | $(ratio "${ISSUE_RPS[group]}" "${ISSUE_RPS[single]}") | ≥ 5 |"
echo "| token redemption, group / single commit | $(ratio "${REDEEM_RATE[group]}" "${REDEEM_RATE[single]}") | |"
echo "| writes per commit, group / single | ${WPC[group]:-?} / ${WPC[single]:-?} | |"
if [ $POSTGRES = 1 ]; then
    echo "| pending poll, postgres / redb, req/s at 256 | $(ratio "$PG_POLL_RPS" "$REDB_AGAIN_RPS") | ≥ 0.9 |"
    echo "| code issuance on postgres, group / single commit (256 conns) | $(ratio "${PG_ISSUE_RPS[group]}" "${PG_ISSUE_RPS[single]}") | ≥ 5 |"
    echo "| token redemption on postgres, group / single commit | $(ratio "${PG_REDEEM_RATE[group]}" "${PG_REDEEM_RATE[single]}") | ≥ 5 |"
fi
echo
echo "Fleet ($DEVICES devices over 5 s, poll interval 1s, 32 people approving after 0-6 s):"
echo
echo '```'
cat "$WORK/fleet.out"
echo "server peak RSS: $((FLEET_HWM / 1024)) MiB"
echo '```'
echo
echo "| memory | RSS MiB | bytes per pending code |"
echo "|---|---:|---:|"
echo "| 0 pending codes | $((RSS0 / 1024)) | |"
for target in $MEM_STEPS; do
    echo "| $target pending codes | $((RSS_AT[$target] / 1024)) | $(awk -v a="${RSS_AT[$target]}" -v b="$RSS0" -v n="$target" 'BEGIN{printf "%.0f", (a-b)*1024/n}') |"
done
last=${MEM_STEPS##* }
echo "| after restart with $last codes | $((RSS_RESTART / 1024)) | $(awk -v a="$RSS_RESTART" -v b="$RSS0" -v n="$last" 'BEGIN{printf "%.0f", (a-b)*1024/n}') |"
echo
echo "Start-up with $last pending codes in the database: ${STARTUP}s (until /health answers)."
if [ $POSTGRES = 1 ]; then
    echo
    echo "Two instances on one PostgreSQL database, $DEVICES devices each polling both in turn (peak RSS per instance: $PG_FLEET_HWM MiB):"
    echo
    echo '```'
    cat "$WORK/pg-fleet.out"
    echo '```'
    echo
    echo "PostgreSQL with $TOKENS live token records: an instance starts in ${PG_TOKENS_STARTUP}s and holds $((PG_TOKENS_RSS / 1024)) MiB ($((PG_RSS0 / 1024)) MiB with none; $(awk -v a="$PG_TOKENS_RSS" -v b="$PG_RSS0" -v n="$TOKENS" 'BEGIN{printf "%.0f", (a-b)*1024/n}') bytes per token)."
fi
echo
if [ -s "$NOTES" ]; then echo "Notes:"; sed 's/^/- /' "$NOTES"; fi
exit $FAIL
