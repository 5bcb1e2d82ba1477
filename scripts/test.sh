#!/usr/bin/env bash
# Runs every test of the workspace, then the integration suite again on PostgreSQL.
#
# - The browser test drives Debian's Chromium through ChromeDriver; this installs both first
#   if they are missing (needs root or sudo).
# - A throwaway PostgreSQL cluster (scripts/pg.sh: Debian's package, a temporary directory, a
#   Unix socket, fsync off) is started for the PostgreSQL backend's own tests and the second
#   pass, and stopped at exit. Each test makes a database of its own on it.
# - Node.js 20+ (installed from Debian if missing) and tests/node's locked npm packages, for
#   the openid-client test.
# - Arguments go to the first `cargo test` (e.g. a test name); the PostgreSQL pass then runs
#   the integration tests that match the same filter.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
    echo "Installing chromium and chromium-driver for the browser test..." >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# The npm openid-client test (tests/node) needs Node.js 20 or newer and its locked packages.
# With them, AUTHGATE_REQUIRE_NODE=1 makes a missing piece a failure rather than a skip.
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(node_major)" -lt 20 ]; then
    echo "Installing Node.js and npm (Debian's) for the openid-client test..." >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
fi
if [ "$(node_major)" -ge 20 ]; then
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
    export AUTHGATE_REQUIRE_NODE=1
else
    echo "warning: Node.js $(node_major) is older than 20; the openid-client test is skipped" >&2
fi

pgdir=$(mktemp -d /tmp/authgate-test-pg.XXXXXX)
trap 'scripts/pg.sh stop "$pgdir"; rm -rf "$pgdir"' EXIT
scripts/pg.sh start "$pgdir" >/dev/null
export AUTHGATE_TEST_PG="host=$pgdir user=postgres dbname=postgres"

# Everything, the integration suite on redb.
cargo test --workspace --locked "$@"

# The integration suite on PostgreSQL. Skipped here, because they start the binary on a redb
# file of their own whatever the backend: cli:: (the offline commands and the file lock),
# durability:: (a full disk and kill -9 on the file) and daemon:: (signals and systemd
# notifications, which do not depend on the backend).
filter=()
for a in "$@"; do
    case "$a" in -*) ;; *) filter+=("$a") ;; esac
done
AUTHGATE_TEST_BACKEND=postgres cargo test --locked --test it -- "${filter[@]}" \
    --skip cli:: --skip durability:: --skip daemon::
