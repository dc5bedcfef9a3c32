#!/usr/bin/env bash
# Installs what the browser tests need: Debian's chromium and chromium-driver (apt), and the
# selenium client into the project's virtualenv (tests/e2e/test_review_page_browser.py,
# tests/e2e/test_review_server_browser.py). Idempotent: installs only what is missing.
# `.ci/run` should call it before `make test`. PYTHON=... picks another interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
fi
echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
echo "chromedriver: $(/usr/bin/chromedriver --version 2>/dev/null || echo /usr/bin/chromedriver)"
if [ -x "$PYTHON" ] && ! "$PYTHON" -c "import selenium" 2>/dev/null; then
    "$PYTHON" -m pip install -q "selenium>=4.20,<5"
fi
if [ -x "$PYTHON" ]; then
    "$PYTHON" -c "import selenium; print('selenium', selenium.__version__)"
fi
