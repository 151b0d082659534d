#!/usr/bin/env bash
# Build the operator and trainer images with podman (or docker where its daemon answers).
#
#   scripts/build-images.sh [operator|trainer|all]       (default: all)
#
# Settings (environment):
#   OPERATOR_IMAGE, TRAINER_IMAGE   tags (default ghcr.io/rlhf-dev/rlhf-{operator,trainer}:<version>)
#   PYTHON_IMAGE   the operator's base (and the CPU trainer base's); "debootstrap" builds a Debian
#                  bookworm base with debootstrap from the machine's apt mirror and imports it
#                  (no registry needed; podman, as root). Default: the Dockerfile's, or
#                  debootstrap when that cannot be pulled.
#   TRAINER_BASE   the trainer's base: the Dockerfile's CUDA pytorch image by default; "cpu"
#                  builds trainer_image/cpu-base.Dockerfile (PYTHON_IMAGE + CPU torch 2.13.0),
#                  also what happens when the CUDA base cannot be pulled.
#   TORCH_INDEX_URL  where the CPU base gets torch (e.g. https://download.pytorch.org/whl/cpu);
#                  empty: the pip configuration's index.
#   PIP_CONF       a pip.conf for the builds (index, extra index, find-links, ...). Default: this
#                  machine's pip configuration (`pip config list`, files and PIP_* env merged).
#   CA_BUNDLE      a CA bundle pip inside the build trusts (a TLS-intercepting proxy, a private
#                  index). Default: pip's `cert` setting, else $SSL_CERT_FILE / $REQUESTS_CA_BUNDLE.
#   ENGINE         podman or docker (default: podman when installed)
#   BUILD_LAYERS   podman: false commits only the final images, not each step (a fresh machine,
#                  CI: no cache to reuse, minutes less); default true (steps cached for rebuilds)
#
# The pip configuration and CA bundle are build secrets: mounted into the RUN that installs,
# never written to a layer. Local paths the configuration names (find-links directories,
# file:// indexes, constraint files) are mounted read-only into the build (podman only: docker
# build cannot mount host paths; use a network index there). Prints each image's size and build time.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
case $what in operator | trainer | all) ;; *) echo "usage: $0 [operator|trainer|all]" >&2; exit 2 ;; esac

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
OPERATOR_IMAGE=${OPERATOR_IMAGE:-ghcr.io/rlhf-dev/rlhf-operator:$version}
TRAINER_IMAGE=${TRAINER_IMAGE:-ghcr.io/rlhf-dev/rlhf-trainer:$version}
DEFAULT_PYTHON_IMAGE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
DEFAULT_TRAINER_BASE=$(sed -n 's/^ARG BASE_IMAGE=//p' trainer_image/Dockerfile)
DEBOOTSTRAP_IMAGE=localhost/rlhf-python:bookworm
CPU_BASE_IMAGE=localhost/rlhf-trainer-base:cpu
PULL_TIMEOUT=${PULL_TIMEOUT:-60}

if [ -z "${ENGINE:-}" ]; then
    if command -v podman >/dev/null; then ENGINE=podman
    elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
    else echo "no container engine: install podman (or docker with a running daemon)" >&2; exit 1
    fi
fi
build_flags=()
if [ "$ENGINE" = podman ]; then
    build_flags+=("--layers=${BUILD_LAYERS:-true}")
    if command -v runc >/dev/null; then
        build_flags+=(--runtime runc)  # crun 1.8 fails in VMs with hybrid cgroups
    fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- the pip configuration and CA bundle, as build secrets ---------------------------------
PYTHON=${PYTHON:-python3}
pip_config() { "$PYTHON" -m pip config list 2>/dev/null || pip config list 2>/dev/null || true; }
if [ -z "${PIP_CONF:-}" ]; then
    PIP_CONF=$work/pip.conf
    # `pip config list` merges the files and PIP_* env: "global.find-links='/opt/wheels'".
    { echo "[global]"
      pip_config \
        | sed -n "s/^[^.]*\.\([a-z-]*\)='\(.*\)'$/\1 = \2/p" \
        | grep -v -E '^(cert|client-cert|config-file) ' \
        | awk -F' = ' '!($1 in v) {order[n++] = $1} {v[$1] = $0} END {for (i = 0; i < n; i++) print v[order[i]]}'
    } > "$PIP_CONF"
fi
if [ -z "${CA_BUNDLE:-}" ]; then
    CA_BUNDLE=$(pip_config | sed -n "s/^[^.]*\.cert='\(.*\)'$/\1/p" | tail -1)
    CA_BUNDLE=${CA_BUNDLE:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-}}}
fi
[ -n "$CA_BUNDLE" ] || { CA_BUNDLE=$work/empty.crt; : > "$CA_BUNDLE"; }
build_flags+=(--secret "id=pipconf,src=$PIP_CONF" --secret "id=cacert,src=$CA_BUNDLE")
if [ "$ENGINE" = podman ]; then
    # Local paths in the configuration, mounted read-only at the same place (build only); for a
    # file:// index its parent directory, since index pages often link to files beside it.
    for path in $(sed -n 's/^[a-z-]* = //p' "$PIP_CONF" | tr ' ' '\n' \
            | sed -n 's|^file://\(/.*\)/[^/]*/*$|\1|p; s|^\(/.*\)|\1|p' | sort -u); do
        if [ -e "$path" ]; then build_flags+=(-v "$path:$path:ro"); fi
    done
fi

exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }
pullable() { exists "$1" || timeout "$PULL_TIMEOUT" "$ENGINE" pull -q "$1" >/dev/null 2>&1; }

timed_build() {  # timed_build TAG ARGS...: build, then report size and seconds
    local tag=$1 started=$SECONDS
    shift
    echo "building $tag ..."
    "$ENGINE" build "${build_flags[@]}" -t "$tag" "$@"
    local size
    size=$("$ENGINE" image inspect --format '{{.Size}}' "$tag")
    summary+=("$(printf '%-50s %6d MB %5d s' "$tag" $((size / 1000000)) $((SECONDS - started)))")
}
summary=()

# --- the Python base ------------------------------------------------------------------------
debootstrap_base() {
    exists "$DEBOOTSTRAP_IMAGE" && return
    local started=$SECONDS mirror
    # The mirror apt uses (deb822 or one-line sources), else Debian's.
    mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | sed -n 's/^URIs: *\([^ ]*\).*/\1/p; s/^deb \(\[[^]]*\] \)\?\(http[^ ]*\) bookworm .*/\2/p' \
        | grep -v security | head -1 || true)
    echo "debootstrap bookworm from ${mirror:=http://deb.debian.org/debian} ..."
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
        bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
    tar -C "$work/rootfs" -c . | "$ENGINE" import -q - "$DEBOOTSTRAP_IMAGE" >/dev/null
    rm -rf "$work/rootfs"
    local size
    size=$("$ENGINE" image inspect --format '{{.Size}}' "$DEBOOTSTRAP_IMAGE")
    summary+=("$(printf '%-50s %6d MB %5d s' "$DEBOOTSTRAP_IMAGE" $((size / 1000000)) $((SECONDS - started)))")
}
if [ "${PYTHON_IMAGE:-}" = debootstrap ] || { [ -z "${PYTHON_IMAGE:-}" ] && ! pullable "$DEFAULT_PYTHON_IMAGE"; }; then
    debootstrap_base
    PYTHON_IMAGE=$DEBOOTSTRAP_IMAGE
    site_packages=/usr/local/lib/python3.11/dist-packages  # Debian's python3
else
    PYTHON_IMAGE=${PYTHON_IMAGE:-$DEFAULT_PYTHON_IMAGE}
    site_packages=/usr/local/lib/python3.11/site-packages
fi

# --- the images -------------------------------------------------------------------------------
if [ "$what" != trainer ]; then
    timed_build "$OPERATOR_IMAGE" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" -f Dockerfile .
fi
if [ "$what" != operator ]; then
    TRAINER_BASE=${TRAINER_BASE:-$DEFAULT_TRAINER_BASE}
    if [ "$TRAINER_BASE" != cpu ] && ! pullable "$TRAINER_BASE"; then
        echo "cannot pull $TRAINER_BASE: building the trainer on a CPU torch base" >&2
        TRAINER_BASE=cpu
    fi
    if [ "$TRAINER_BASE" = cpu ]; then
        timed_build "$CPU_BASE_IMAGE" -f trainer_image/cpu-base.Dockerfile \
            --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "SITE_PACKAGES=$site_packages" \
            --build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL:-}" trainer_image
        TRAINER_BASE=$CPU_BASE_IMAGE
    fi
    timed_build "$TRAINER_IMAGE" --build-arg "BASE_IMAGE=$TRAINER_BASE" -f trainer_image/Dockerfile .
fi

echo
printf '%-50s %9s %7s\n' image size build
printf '%s\n' "${summary[@]}"
