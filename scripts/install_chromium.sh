#!/bin/sh
# Install Debian's chromium for the browser test (tests/integration/test_ui_browser.py).
# Playwright drives it through executable_path; `playwright install` (a download) is never used.
# Runs from `make test`: installs only as root on a Debian-like system when chromium is missing;
# otherwise says why it did nothing and lets the test skip (or fail when CI=true).
set -eu

CHROMIUM="${OPENAI_BATCH_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "install_chromium: $CHROMIUM is missing and we are not root; the browser test will skip" \
        "(install it with: sudo apt-get install -y chromium)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: no apt-get here; install chromium yourself for the browser test" >&2
    exit 0
fi
echo "install_chromium: installing Debian's chromium for the browser test ..." >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
        || echo "install_chromium: apt-get install chromium failed; the browser test will skip" >&2
fi
