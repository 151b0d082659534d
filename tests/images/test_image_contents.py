"""What each built image holds and what `IMAGE --help` does (podman; see conftest)."""

from __future__ import annotations

import json

import pytest

from .conftest import Images, podman, run_flags

pytestmark = pytest.mark.images

# Where the build mounted the pip configuration, the CA bundle and local package directories:
# none of them may be left in an image, not even as an empty mount point.
BUILD_ONLY = ["/run/secrets", "/etc/pip.conf", "/etc/xdg/pip", "/opt/wheels", "/opt/pypi", "/opt/pypi-more", "/src"]


def sh(image: str, script: str, *flags: str) -> str:
    proc = podman("run", "--rm", *run_flags(), *flags, "--entrypoint", "sh", image, "-c", script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_operator_help_prints_usage_and_starts_nothing(images: Images) -> None:
    proc = podman("run", "--rm", *run_flags(), "--network", "none", images.operator, "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("usage: python -m rlhf_operator")
    assert "RLHF_WATCH_NAMESPACES" in proc.stdout and "RLHF_TRAINER_IMAGE" in proc.stdout
    assert "kopf" not in proc.stderr.lower(), "the operator must not start"
    refused = podman("run", "--rm", *run_flags(), "--network", "none", images.operator, "--namespace", "x")
    assert refused.returncode == 2 and "unrecognized arguments" in refused.stderr


def test_trainer_help_prints_usage(images: Images) -> None:
    for args in (["--help"], []):  # no arguments: the image's CMD is --help
        proc = podman("run", "--rm", *run_flags(), "--network", "none", images.trainer, *args, timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.startswith("usage: rlhf-train")
        for stage in ("sft", "reward", "ppo", "dpo"):
            assert stage in proc.stdout


def test_operator_image_holds_only_the_operator(images: Images) -> None:
    out = sh(
        images.operator,
        "id -u; id -g; command -v rlhf-train pip || true; "
        'python -c \'import importlib.util as u; print([m for m in ("torch", "kubernetes.aio", "setuptools")'
        ' if u.find_spec(m.split(".")[0]) and u.find_spec(m)])\'; '
        "python -c 'import kubernetes.client, kubernetes.config, rlhf_operator.controller.handlers, rlhf_cli.main'; "
        f"for p in {' '.join(BUILD_ONLY)}; do [ -e $p ] && echo left: $p; done; true",
    )
    lines = out.split("\n")
    assert lines[:2] == ["65532", "65532"]
    assert lines[2] == "[]", "no torch, no kubernetes.aio, no setuptools"
    assert "left:" not in out and "rlhf-train" not in out and "/pip" not in out


def test_trainer_image_torch_torchrun_and_user(images: Images) -> None:
    out = sh(
        images.trainer,
        "id -u; id -g; stat -c %u:%g /workspace /home/trainer; command -v rlhf-train; command -v torchrun; "
        "python -c 'import torch; print(torch.__version__)'; "
        "torchrun --help >/dev/null && echo torchrun-ok; "
        f"for p in {' '.join(BUILD_ONLY)}; do [ -e $p ] && echo left: $p; done; true",
    )
    lines = out.split("\n")
    assert lines[:4] == ["10001", "10001", "10001:10001", "10001:10001"]
    assert lines[4:6] == ["/opt/venv/bin/rlhf-train", "/opt/venv/bin/torchrun"]
    assert lines[6].startswith("2.13.0")
    assert "torchrun-ok" in out and "left:" not in out


def test_the_builds_leave_no_secret_in_a_layer_and_no_useradd_warning(images: Images) -> None:
    assert "useradd warning" not in images.build_log
    for image in (images.operator, images.trainer):
        history = podman("history", "--no-trunc", "--format", "json", image)
        assert history.returncode == 0, history.stderr
        created = " ".join(
            str(layer.get("CreatedBy") or layer.get("created_by") or "") for layer in json.loads(history.stdout)
        )
        assert "BEGIN CERTIFICATE" not in created and "index-url" not in created
        inspect = json.loads(podman("image", "inspect", image).stdout)[0]
        env = " ".join(inspect["Config"].get("Env") or [])
        assert "PIP_CONFIG_FILE" not in env and "PIP_CERT" not in env and "PIP_INDEX" not in env
