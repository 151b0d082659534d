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

# Debian's packages, --no-install-recommends, only as root with apt-get; CI must have them:
# - headless Chromium renders the HTML report in a test (skipped without it): ~12 s measured;
# - podman, buildah, debootstrap and runc build and run the images (tests/images). The image
#   build (scripts/build-test-images.sh: a debootstrap'ed base, then both images; minutes) starts
#   in the background as soon as they are installed and goes on past this script: the image
#   tests wait for it (.images/build.rc). RLHF_IMAGE_BUILD=no leaves it to the tests.
system_packages=()
[ -x /usr/bin/chromium ] || system_packages+=(chromium)
command -v podman >/dev/null || system_packages+=(podman buildah debootstrap runc)
( if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    if [ ${#system_packages[@]} -gt 0 ]; then
        for attempt in 1 2; do  # one retry: a mirror hiccup should not fail CI
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends "${system_packages[@]}" && break
            sleep 5
        done
    fi
    if command -v podman >/dev/null && [ "${RLHF_IMAGE_BUILD:-background}" = background ]; then
        mkdir -p .images && rm -f .images/build.rc
        setsid bash scripts/build-test-images.sh > /dev/null 2>&1 < /dev/null &
        echo $! > .images/build.pid  # the script writes it too; here it is there before we exit
    fi
  fi ) > .system-install.log 2>&1 &
system_pid=$!

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
wait "$system_pid" || true
if [ ! -x /usr/bin/chromium ]; then
    cat .system-install.log >&2
    if [ "${CI:-}" = true ]; then echo "chromium install failed" >&2; exit 1; fi
    echo "chromium not installed: the report's browser test will be skipped" >&2
fi
if ! command -v podman >/dev/null; then
    cat .system-install.log >&2
    if [ "${CI:-}" = true ]; then echo "podman install failed" >&2; exit 1; fi
    echo "podman not installed: the image tests (tests/images) will be skipped" >&2
fi
echo "installed: .venv (activate with . .venv/bin/activate) and .checkov-venv"
