# syntax=docker/dockerfile:1
# A CPU stand-in for the trainer's CUDA base: a Python base plus CPU torch 2.13.0 (the version
# the [train] extra pins) in the interpreter's own site-packages, as pytorch/pytorch ships it.
# For machines without a GPU or without access to the CUDA base (CI, laptops):
#   scripts/build-images.sh trainer        (builds this first when the CUDA base cannot be pulled)
#   docker build -f trainer_image/cpu-base.Dockerfile -t rlhf-trainer-base:cpu \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu trainer_image
# then the trainer with --build-arg BASE_IMAGE=rlhf-trainer-base:cpu.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
# Empty: the index of the pip configuration (the pipconf secret); the CPU wheels live on
# https://download.pytorch.org/whl/cpu (PyPI's Linux torch is the CUDA build).
ARG TORCH_INDEX_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# The interpreter's site-packages: /usr/local/lib/python3.11/site-packages in the python images,
# .../dist-packages in Debian's python3 (a debootstrap'ed base).
ARG SITE_PACKAGES=/usr/local/lib/python3.11/site-packages
# torch goes to /opt/torch here and is copied to the interpreter's site-packages below, so the
# final stage runs nothing (no build-time mount can leave anything behind). Its scripts are
# dropped: the trainer image has its own torchrun.
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
    && python -c "import site, sys; sys.exit('${SITE_PACKAGES}' not in site.getsitepackages())" \
    && python -m venv /tmp/pip \
    && PIP_CONFIG_FILE=/run/secrets/pipconf /tmp/pip/bin/pip install --no-cache-dir --target /opt/torch \
       ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}" \
    && rm -r /opt/torch/bin

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="rlhf-trainer-base-cpu" \
      org.opencontainers.image.description="Python with CPU torch: the trainer image's base without CUDA"
ARG SITE_PACKAGES=/usr/local/lib/python3.11/site-packages
COPY --from=build /opt/torch/ ${SITE_PACKAGES}/
