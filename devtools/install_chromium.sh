#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/web): installed with apt-get when missing, as root.
# Playwright drives this binary; no browser is ever downloaded at run time. Elsewhere (not root, no
# apt-get) it only says so, and the browser tests are skipped, except under CI=true, where they fail.
set -euo pipefail

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "$CHROMIUM not found: the browser tests will be skipped (as root: apt-get install chromium)"
  exit 0
fi
echo "Installing Debian's chromium for the browser tests (apt-get)..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
"$CHROMIUM" --version
