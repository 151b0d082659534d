#!/usr/bin/env bash
# Development/CI install: .venv with the operator, trainer and test extras; checkov in its own
# venv (.checkov-venv) because its pins would downgrade packages the project uses.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
PYTHON=${PYTHON:-python3}

# checkov installs in the background while the main environment installs
( [ -x .checkov-venv/bin/checkov ] || { "$PYTHON" -m venv .checkov-venv \
    && .checkov-venv/bin/pip install -q checkov==3.3.30; } ) > .checkov-install.log 2>&1 &
checkov_pid=$!

# Headless Chromium renders the HTML report in a test (skipped without it). Debian's package,
# --no-install-recommends: ~12 s measured. Only as root with apt-get; CI must have it.
( if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    for attempt in 1 2; do  # one retry: a mirror hiccup should not fail CI
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends chromium && break
        sleep 5
    done
  fi ) > .chromium-install.log 2>&1 &
chromium_pid=$!

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first and pinned: the CPU build of 2.13.0; otherwise pip pulls a multi-GB CUDA build.
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[train,test]'

if ! wait "$checkov_pid"; then
    cat .checkov-install.log >&2
    echo "checkov install failed" >&2
    exit 1
fi
wait "$chromium_pid" || true
if [ ! -x /usr/bin/chromium ]; then
    cat .chromium-install.log >&2
    if [ "${CI:-}" = true ]; then echo "chromium install failed" >&2; exit 1; fi
    echo "chromium not installed: the report's browser test will be skipped" >&2
fi
echo "installed: .venv (activate with . .venv/bin/activate) and .checkov-venv"
