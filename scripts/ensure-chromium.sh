#!/usr/bin/env bash
# Make Debian's headless-capable Chromium available for the viewer's browser test (tests/server/test_ui.py).
#
# 1. If /usr/bin/chromium (or $TOOLGYM_CHROMIUM) exists, do nothing.
# 2. Else, when root: install Debian's `chromium` package (no recommends: no desktop stack).
# Playwright drives this binary; it never downloads a browser of its own.
# Exits non-zero with a clear message when no Chromium can be had.
set -euo pipefail
. "$(dirname "$0")/_apt.sh"
bin=${TOOLGYM_CHROMIUM:-/usr/bin/chromium}

if [ -x "$bin" ]; then
  echo "ensure-chromium: $bin present"
  exit 0
fi
apt_install ensure-chromium chromium fonts-dejavu-core
if [ ! -x "$bin" ]; then
  echo "ensure-chromium: chromium installed but $bin is missing" >&2
  exit 1
fi
echo "ensure-chromium: $("$bin" --version 2>/dev/null || echo chromium) installed"
