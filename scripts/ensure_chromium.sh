#!/usr/bin/env bash
# The chart page's test drives a real headless Chromium (Debian's package; Playwright only drives it).
# Installs it when missing; prints where it is otherwise. Needs root or sudo on a fresh machine.
set -euo pipefail
CHROMIUM=${CHROMIUM_PATH:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
echo "installing Debian's chromium for the browser test (once)" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "chromium is missing and neither root nor sudo is available: install the 'chromium' package" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q chromium >/dev/null
}
test -x "$CHROMIUM" || { echo "chromium did not install at $CHROMIUM" >&2; exit 1; }
