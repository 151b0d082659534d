# syntax=docker/dockerfile:1
# The operator image: kopf + the kubernetes client, no torch and no training extras.
#   docker build -t ghcr.io/rlhf-dev/rlhf-operator:0.1.0 .
# Release builds should pin the base by digest: --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...
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
RUN /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

# --- runtime ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="rlhf-operator" \
      org.opencontainers.image.description="kopf operator that runs RLHF training as Kubeflow jobs" \
      org.opencontainers.image.source="https://github.com/rlhf-dev/rlhf-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric non-root user, so Pod Security "restricted" (runAsNonRoot) can verify it.
RUN groupadd --system --gid 65532 rlhf \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin rlhf
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /tmp
# 8080: kopf liveness (/healthz); 9090: Prometheus metrics (/metrics).
EXPOSE 8080 9090
# kopf run, standalone, with the liveness endpoint; settings come from RLHF_* env (see the chart).
ENTRYPOINT ["python", "-m", "rlhf_operator"]
