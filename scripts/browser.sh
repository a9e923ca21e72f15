#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the browser test (tests/test_chat_page.py);
# Playwright drives it by its path, so `playwright install` is never needed. Idempotent.
set -euo pipefail
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"

if [[ ! -x /usr/bin/chromium ]]; then
  echo "==> installing chromium from Debian"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
/usr/bin/chromium --version 2>/dev/null || true
