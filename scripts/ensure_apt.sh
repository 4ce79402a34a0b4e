#!/usr/bin/env bash
# Make sure a tool the tests drive is installed from Debian's packages: `ensure_apt.sh PATH PACKAGE WHY`.
# Installs PACKAGE when PATH is not an executable; does nothing otherwise. Needs root or sudo on a fresh machine.
#   chromium: the chart page's test drives a real headless browser (Playwright only drives it).
#   docker-compose: tests/test_compose.py validates docker-compose.yml with it (no Docker daemon needed).
set -euo pipefail
[ $# = 3 ] || { echo "usage: $0 PATH PACKAGE WHY" >&2; exit 2; }
path=$1 package=$2 why=$3
if [ -x "$path" ]; then
  exit 0
fi
echo "installing Debian's $package for $why (once)" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "$package is missing and neither root nor sudo is available: install the '$package' package" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q "$package" >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q "$package" >/dev/null
}
test -x "$path" || { echo "$package did not install at $path" >&2; exit 1; }
