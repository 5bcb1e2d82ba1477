#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and trying things out, from Debian's `postgresql`
# package: initdb in a temporary directory (as the `postgres` user when run as root, since
# initdb refuses root), listening only on a Unix socket there, fsync off (PG_FSYNC=on keeps it,
# for benchmarks of durable writes). PG_TCP_PORT=N also listens on 127.0.0.1:N, and with
# PG_SSL_CERT and PG_SSL_KEY (PEM files) it offers TLS with that certificate (for tests).
#
#   scripts/pg.sh start DIR   creates (unless DIR has one) and starts a cluster in DIR; prints
#                             the socket directory
#   scripts/pg.sh stop DIR    stops it (fast shutdown); `start` starts it again, data kept
#
# Installs the package first if the binaries are missing (needs root or sudo).
set -euo pipefail

cmd=${1:?usage: pg.sh start|stop DIR}
dir=${2:?usage: pg.sh start|stop DIR}

bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$d" ]; then
        echo "Installing PostgreSQL (Debian package postgresql)..." >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
        d=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    fi
    echo "$d"
}

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "$cmd" in
start)
    bin=$(bindir)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    [ -d "$dir/data" ] || as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
    fsync=${PG_FSYNC:-off}
    opts="-c unix_socket_directories='$dir' -c fsync=$fsync -c full_page_writes=$fsync -c max_connections=400"
    if [ -n "${PG_TCP_PORT:-}" ]; then
        opts="$opts -c listen_addresses='127.0.0.1' -c port=$PG_TCP_PORT"
        if [ -n "${PG_SSL_CERT:-}" ]; then
            # The server reads its key as its own user, and only from a private file.
            install -m 0600 "$PG_SSL_KEY" "$dir/server.key"
            install -m 0644 "$PG_SSL_CERT" "$dir/server.crt"
            [ "$(id -u)" -eq 0 ] && chown postgres "$dir/server.key" "$dir/server.crt"
            opts="$opts -c ssl=on -c ssl_cert_file='$dir/server.crt' -c ssl_key_file='$dir/server.key'"
        fi
    else
        opts="$opts -c listen_addresses=''"
    fi
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "$opts" start >/dev/null
    echo "$dir"
    ;;
stop)
    bin=$(bindir)
    [ -d "$dir/data" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    ;;
*)
    echo "usage: pg.sh start|stop DIR" >&2
    exit 2
    ;;
esac
