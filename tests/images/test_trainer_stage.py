"""One stage in the trainer image, run as the rendered stage pod runs it.

The quickstart's SFT stage (a few steps) is rendered as the operator would create it (the same
objects `rlhf render` prints): the PyTorchJob's Master pod gives the command, env, user, fsGroup,
security context (read-only root, no capabilities) and volumes; the stage's ConfigMap gives the
mounted config. The run's claim is a host directory; the stage must leave its result.json and
merged model there, and nothing may need a writable place the pod does not mount.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from rlhf_api.validation import parse_run
from rlhf_operator.render import render
from rlhf_operator.settings import OperatorSettings

from . import pods
from .conftest import ROOT, Images, podman, run_flags

pytestmark = [pytest.mark.images]

STEPS = 4


def quickstart_objects(trainer_image: str) -> list[dict[str, Any]]:
    run = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    run["metadata"]["namespace"] = "team"
    run["spec"]["sft"]["training"]["maxSteps"] = STEPS
    return render(parse_run(run), OperatorSettings(trainer_image=trainer_image))


def test_sft_stage_runs_in_the_trainer_image_as_its_pod(images: Images, tmp_path: Path) -> None:
    objects = quickstart_objects(images.trainer)
    (job,) = [o for o in objects if o["kind"] == "PyTorchJob" and o["metadata"]["labels"]["rlhf.dev/stage"] == "sft"]
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    (claim,) = [o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"]
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == images.trainer
    volume = tmp_path / "claim"
    volume.mkdir()

    entrypoint, args = pods.command_flags(container)
    proc = podman(
        "run",
        "--rm",
        *run_flags(),
        "--network",
        "none",  # a stage of the builtin model and dataset needs nothing from outside
        *pods.security_flags(pod, container),
        *pods.volume_flags(pod, container, {claim: volume}, configmaps, tmp_path),
        *pods.env_flags(container),
        *entrypoint,
        container["image"],
        *args,
        timeout=800,
    )
    log = (proc.stdout + proc.stderr)[-5000:]
    assert proc.returncode == 0, log
    config = yaml.safe_load(next(iter(configmaps["quickstart-sft-config"]["data"].values())))
    output = volume / Path(config["outputDir"]).relative_to(pod_mount(container, "data"))
    result = json.loads((output / "result.json").read_text())
    assert result["status"] == "succeeded", result
    assert result["stage"] == "sft"
    assert result["steps"] == STEPS and result["metrics"]["global_step"] == STEPS
    assert math.isfinite(result["metrics"]["train_loss"]), result["metrics"]
    assert (output / "merged" / "config.json").is_file()
    # Written by the trainer's uid with the pod's fsGroup, as on a cluster's volume.
    assert (output / "result.json").stat().st_uid == pod["securityContext"]["runAsUser"]
    # torch's compile cache went where the pod's env points it (not /tmp/torchinductor_<user>).
    assert (tmp_path / "emptydir-tmp" / "torchinductor").is_dir()


def pod_mount(container: dict[str, Any], volume: str) -> str:
    return next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume)
