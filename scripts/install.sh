#!/usr/bin/env bash
# Installs AuthGate as a systemd service. Safe to run again: it only replaces what differs.
#
#   sudo scripts/install.sh [--no-start] [BINARY]
#     BINARY      the authgate binary to install (default: target/release/authgate)
#     --no-start  install the files only; no systemctl
#   DESTDIR=/tmp/stage scripts/install.sh --no-start
#                 installs under a staging root (for packaging and tests): no user is
#                 created and systemctl is never run; what would be done is printed
#
# It installs the binary to /usr/local/bin/authgate, creates the system user authgate,
# installs config/authgate.service to /etc/systemd/system/, and writes
# /etc/authgate/authgate.env (0640 root:authgate) from config/authgate.env.example with
# fresh JWT_SECRET and SESSION_SECRET, only if that file does not exist yet: an existing
# one is never rewritten, so its settings and secrets survive reinstalls.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

START=1
BIN=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-start) START=0 ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "install.sh: unknown option $1" >&2; exit 2 ;;
        *) [ -z "$BIN" ] || { echo "install.sh: one binary only" >&2; exit 2; }; BIN=$1 ;;
    esac
    shift
done
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/authgate}
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}

USER_NAME=authgate
BIN_DEST=$DESTDIR/usr/local/bin/authgate
UNIT_SRC=$ROOT/config/authgate.service
UNIT_DEST=$DESTDIR/etc/systemd/system/authgate.service
ENV_SRC=$ROOT/config/authgate.env.example
ENV_DIR=$DESTDIR/etc/authgate
ENV_DEST=$ENV_DIR/authgate.env
STATE_DB=/var/lib/authgate/authgate.redb

TMP=""
trap '[ -z "$TMP" ] || rm -f "$TMP"' EXIT

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }

if [ ! -f "$BIN" ] || [ ! -x "$BIN" ]; then
    die "no executable at $BIN (build it: cargo build --release --locked)"
fi
[ -f "$UNIT_SRC" ] || die "missing $UNIT_SRC"
[ -f "$ENV_SRC" ] || die "missing $ENV_SRC"
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo $0), or set DESTDIR to stage the files"
fi

# install_if_changed SRC DEST MODE: copies SRC over DEST unless they are identical already.
# The copy goes to a temporary name first and is renamed into place, so a running binary
# is never written to. Returns 0 if it installed, 1 if DEST was already up to date.
install_if_changed() {
    local src=$1 dest=$2 mode=$3
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        return 1
    fi
    mkdir -p "$(dirname "$dest")"
    TMP=$(mktemp "$dest.XXXXXX")
    cp "$src" "$TMP"
    chmod "$mode" "$TMP"
    mv -f "$TMP" "$dest"
    TMP=""
    return 0
}

# A random 32-byte secret as 64 hex characters (the same as `openssl rand -hex 32`), from
# coreutils only.
secret() {
    local s
    s=$(od -An -vtx1 -N32 /dev/urandom | tr -d ' \n')
    [ ${#s} -eq 64 ] || die "could not read 32 random bytes from /dev/urandom"
    printf '%s' "$s"
}

# ---------------------------------------------------------------- binary
CHANGED=0
if install_if_changed "$BIN" "$BIN_DEST" 0755; then
    say "installed $BIN_DEST (from $BIN)"
    CHANGED=1
else
    say "$BIN_DEST is up to date"
fi

# ---------------------------------------------------------------- user
HAVE_GROUP=0
getent group "$USER_NAME" >/dev/null 2>&1 && HAVE_GROUP=1
NOLOGIN=/usr/sbin/nologin
[ -x "$NOLOGIN" ] || NOLOGIN=/sbin/nologin
USERADD=(useradd --system --user-group --home-dir /var/lib/authgate --no-create-home
    --shell "$NOLOGIN" --comment "AuthGate server" "$USER_NAME")
if getent passwd "$USER_NAME" >/dev/null 2>&1; then
    say "user $USER_NAME exists"
elif [ -n "$DESTDIR" ]; then
    say "staging root: not creating the user; on the target run: $(printf '%q ' "${USERADD[@]}")"
else
    "${USERADD[@]}"
    HAVE_GROUP=1
    say "created system user $USER_NAME"
fi

# ---------------------------------------------------------------- unit
if install_if_changed "$UNIT_SRC" "$UNIT_DEST" 0644; then
    say "installed $UNIT_DEST"
    CHANGED=1
else
    say "$UNIT_DEST is up to date"
fi

# ---------------------------------------------------------------- settings
if [ ! -d "$ENV_DIR" ]; then
    mkdir -p "$ENV_DIR"
    chmod 0750 "$ENV_DIR"
    [ $HAVE_GROUP = 0 ] || chgrp "$USER_NAME" "$ENV_DIR" || say "could not give $ENV_DIR to group $USER_NAME"
fi
if [ -e "$ENV_DEST" ]; then
    say "$ENV_DEST exists: left as it is (secrets kept)"
else
    TMP=$(mktemp "$ENV_DEST.XXXXXX") # 0600 until it is complete
    # The example with generated secrets and the database in the state directory; a setting
    # the example lacks is appended.
    JWT=$(secret) SESSION=$(secret) DB=$STATE_DB awk '
        BEGIN { print "# Written by scripts/install.sh; JWT_SECRET and SESSION_SECRET are this host'"'"'s own." }
        /^#?[ \t]*JWT_SECRET=/ && !jwt { print "JWT_SECRET=" ENVIRON["JWT"]; jwt = 1; next }
        /^#?[ \t]*SESSION_SECRET=/ && !ses { print "SESSION_SECRET=" ENVIRON["SESSION"]; ses = 1; next }
        /^#?[ \t]*DATABASE_PATH=/ && !db { print "DATABASE_PATH=" ENVIRON["DB"]; db = 1; next }
        { print }
        END {
            if (!jwt) print "JWT_SECRET=" ENVIRON["JWT"]
            if (!ses) print "SESSION_SECRET=" ENVIRON["SESSION"]
            if (!db) print "DATABASE_PATH=" ENVIRON["DB"]
        }' "$ENV_SRC" >"$TMP"
    chmod 0640 "$TMP"
    if [ $HAVE_GROUP = 1 ]; then
        chown "root:$USER_NAME" "$TMP" 2>/dev/null || chgrp "$USER_NAME" "$TMP" ||
            say "could not give $ENV_DEST to group $USER_NAME: the service cannot read it until you do"
    else
        say "staging root: on the target run: chown root:$USER_NAME /etc/authgate /etc/authgate/authgate.env"
    fi
    mv "$TMP" "$ENV_DEST"
    TMP=""
    say "wrote $ENV_DEST with new secrets; review BASE_URL and the rest before going live"
fi

# ---------------------------------------------------------------- systemd
NEXT="systemctl daemon-reload && systemctl enable --now authgate"
if [ -n "$DESTDIR" ] || [ $START = 0 ]; then
    say "not starting; to start: $NEXT"
elif [ ! -d /run/systemd/system ]; then
    say "systemd is not running here; on a systemd host run: $NEXT"
else
    systemctl daemon-reload
    if [ $CHANGED = 1 ] && systemctl is-active --quiet authgate; then
        systemctl restart authgate
        say "restarted authgate (new binary or unit)"
    fi
    systemctl enable --now authgate
    say "authgate is enabled and running (systemctl status authgate; journalctl -u authgate)"
fi
