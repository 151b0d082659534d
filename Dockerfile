# syntax=docker/dockerfile:1
# The operator image: kopf + the kubernetes client, no torch and no training extras.
#   scripts/build-images.sh operator        (or: docker build -t ghcr.io/rlhf-dev/rlhf-operator:0.1.0 .)
# Release builds should pin the base by digest: --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...
# Any Debian-like base with python (>= 3.11, `python` on PATH, the venv module) works, e.g. a
# debootstrap'ed bookworm (docs/install.md, "Without a registry").
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: install the base distribution (operator deps only) into a virtualenv ------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Only what the wheel needs: the contract, the operator and its CLI, and the project metadata. The trainer
# package is not copied: the operator never imports it (the contract package is all it shares).
COPY pyproject.toml README.md ./
COPY api/ api/
COPY operator/ operator/
COPY cli/ cli/
# `.` without extras: the [train] extra (torch, transformers, trl, ...) stays out of this image.
# The package index configuration (a pip.conf) and a CA bundle come as optional build secrets,
# mounted for this RUN only (never in a layer, and this stage is not the final image).
# Removed after the install: rlhf-train (the trainer's console script: its package is not here,
# so it would only fail); pip and setuptools (nothing installs at run time, 23 MB); the
# kubernetes client's asyncio copy kubernetes/aio (68 MB of its 126: the operator, kopf and the
# CLI use the synchronous client only; the import check below covers what they load).
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
    && PIP_CONFIG_FILE=/run/secrets/pipconf /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools \
    && rm -r /opt/venv/bin/rlhf-train /opt/venv/lib/python3*/site-packages/kubernetes/aio \
    && /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
    && /opt/venv/bin/python -c "import kubernetes.client, kubernetes.config, rlhf_operator.controller.handlers, rlhf_cli.main" \
    && /opt/venv/bin/python -m rlhf_operator --help >/dev/null
# A non-system user (uid 65532 is above SYS_UID_MAX, so --system would warn): created here and
# its passwd/group entries copied, so that the final stage runs nothing.
RUN groupadd --gid 65532 rlhf \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin --key UID_MAX=65532 --key GID_MAX=65532 rlhf

# --- runtime: no RUN, so no build-time mount can leave anything behind ----------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="rlhf-operator" \
      org.opencontainers.image.description="kopf operator that runs RLHF training as Kubeflow jobs" \
      org.opencontainers.image.source="https://github.com/rlhf-dev/rlhf-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /etc/passwd /etc/group /etc/
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric non-root user, so Pod Security "restricted" (runAsNonRoot) can verify it.
USER 65532:65532
WORKDIR /tmp
# 8080: kopf liveness (/healthz); 9090: Prometheus metrics (/metrics).
EXPOSE 8080 9090
# kopf run, standalone, with the liveness endpoint; settings come from RLHF_* env (see the chart).
# `IMAGE --help` prints them; other arguments are refused.
ENTRYPOINT ["python", "-m", "rlhf_operator"]
