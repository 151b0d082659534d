#!/usr/bin/env bash
# The images the image tests run (tests/images): both Dockerfiles on a debootstrap'ed Debian
# base (no registry) and a CPU torch base, tagged localhost/rlhf-{operator,trainer}:test.
# install-dev.sh starts it in the background (as root, with podman installed); the tests wait for
# it, or run it themselves. Writes .images/build.log, then .images/build.rc (its exit status).
# On CI (CI=true, a fresh machine: nothing to reuse) podman commits only the final images.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .images
rm -f .images/build.rc
echo $$ > .images/build.pid
started=$SECONDS
OPERATOR_IMAGE=localhost/rlhf-operator:test TRAINER_IMAGE=localhost/rlhf-trainer:test \
    PYTHON_IMAGE=${PYTHON_IMAGE:-debootstrap} TRAINER_BASE=${TRAINER_BASE:-cpu} \
    BUILD_LAYERS=${BUILD_LAYERS:-$([ "${CI:-}" = true ] && echo false || echo true)} \
    bash scripts/build-images.sh all > .images/build.log 2>&1
rc=$?
echo "build-test-images: exit $rc after $((SECONDS - started)) s" >> .images/build.log
echo "$rc" > .images/build.rc
exit "$rc"
