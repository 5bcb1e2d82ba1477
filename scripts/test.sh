#!/usr/bin/env bash
# Runs every test of the workspace. The browser test drives Debian's Chromium through
# ChromeDriver; this installs both first if they are missing (needs root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
    echo "Installing chromium and chromium-driver for the browser test..." >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi

cargo test --workspace --locked "$@"
