"""The image tier: both images built with podman (scripts/build-test-images.sh) and run.

The build takes minutes, so scripts/install-dev.sh starts it in the background (as root, once
podman is installed) and the `images` fixture waits for it; without such a build in flight the
fixture runs the script itself. Skipped, with the reason, where no container runtime can run
(no podman, or not root for the debootstrap base); never on CI, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# The kmock emulator and its fixtures, shared with the operator's own tests.
from tests.operator.conftest import cluster, kmock_options  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".images"
BUILD_SCRIPT = ROOT / "scripts" / "build-test-images.sh"
OPERATOR_IMAGE = "localhost/rlhf-operator:test"  # the tags build-test-images.sh gives
TRAINER_IMAGE = "localhost/rlhf-trainer:test"
BUILD_TIMEOUT = 40 * 60


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each image test may wait for (or run) the build in the session fixture: the timeout covers
    it. (tests/conftest.py runs them last, so the build install-dev.sh started overlaps the rest.)"""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT + 900))


def _unavailable() -> str | None:
    """Why no image can be built and run here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/install-dev.sh installs it as root: podman buildah debootstrap runc)"
    if os.geteuid() != 0:
        return "the debootstrap'ed base image needs root"
    info = subprocess.run(["podman", "info"], capture_output=True, text=True, timeout=120, check=False)
    if info.returncode != 0:
        return f"podman cannot run here: {info.stderr.strip()[-500:]}"
    return None


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Images:
    operator: str
    trainer: str
    build_log: str


def run_flags() -> list[str]:
    """`podman run` flags this kind of machine needs: runc (crun 1.8 fails with hybrid cgroups)
    and limits the VM lets a container set (it may not raise its own)."""
    flags = ["--runtime", "runc"] if shutil.which("runc") else []
    return [*flags, "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]


@pytest.fixture(scope="session")
def images() -> Images:
    reason = _unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the image tests must run on CI: {reason}")
        pytest.skip(reason)
    pid_file, rc_file, log = STATE / "build.pid", STATE / "build.rc", STATE / "build.log"
    if pid_file.exists() and (_alive(pid_file) or rc_file.exists()):
        # A build started by install-dev.sh: wait for its exit status.
        deadline = time.monotonic() + BUILD_TIMEOUT
        while not rc_file.exists() and _alive(pid_file) and time.monotonic() < deadline:
            time.sleep(2)
    else:
        subprocess.run(["bash", str(BUILD_SCRIPT)], timeout=BUILD_TIMEOUT, check=False)
    rc = rc_file.read_text().strip() if rc_file.exists() else "none (the build died)"
    text = log.read_text(errors="replace") if log.exists() else ""
    # Consumed: a later session builds again (podman's layer cache makes an unchanged tree quick).
    pid_file.unlink(missing_ok=True)
    rc_file.unlink(missing_ok=True)
    if rc != "0":
        pytest.fail(f"scripts/build-test-images.sh failed (exit {rc}):\n{text[-4000:]}")
    return Images(operator=OPERATOR_IMAGE, trainer=TRAINER_IMAGE, build_log=text)


def podman(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
