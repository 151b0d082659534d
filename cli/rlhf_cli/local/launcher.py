"""The local launcher: a stage's "job" is a process on this machine (`rlhf run`).

It plays the part PyTorchJob or TrainJob plays on a cluster, behind the same interface
(launchers/base.py), so the state machine cannot tell the laptop from the cluster. The job body
is a record the local backend keeps (local/backend.py): its spec says what to run, its status
what happened.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from rlhf_api import layout
from rlhf_api.naming import job_name, labels
from rlhf_api.spec import RLHFRun
from rlhf_operator.api_ref import ApiRef
from rlhf_operator.manifests.pod import SHUTDOWN_TIMEOUT_ENV, shutdown_timeout
from rlhf_operator.observed_job import JobState, ObservedJob, observe_common
from rlhf_operator.plan import StagePlan
from rlhf_operator.settings import OperatorSettings

LOCAL_JOB_API = ApiRef("local.rlhf.dev", "v1", "stageprocesses")
LOCAL_JOB_KIND = "StageProcess"
_STATES: tuple[JobState, ...] = ("Pending", "Running", "Suspended", "Succeeded", "Failed")


def stage_command(stage: str, config_path: str, nproc: int) -> list[str]:
    """`rlhf-train <stage> --config FILE`, through torchrun when several processes are asked for."""
    trainer = ["-m", "rlhf_trainer", stage, "--config", config_path]
    if nproc <= 1:
        return [sys.executable, *trainer]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *trainer]


class LocalLauncher:
    name = "local"
    kind = LOCAL_JOB_KIND
    api = LOCAL_JOB_API
    result_container = ""  # the result is read from result.json, not from a pod

    def __init__(self, nproc: int | None = None) -> None:
        self.nproc = nproc  # `rlhf run --nproc`; None: workers x processes per worker

    def build_job(
        self,
        run: RLHFRun,
        stage: StagePlan,
        attempt: int,
        owner: dict[str, Any] | None,
        settings: OperatorSettings,
        suspend: bool,
    ) -> dict[str, Any]:
        nproc = self.nproc or stage.placement.workers * stage.placement.processes_per_worker
        config_path = f"{stage.output_dir}/{layout.CONFIG}"
        return {
            "apiVersion": self.api.api_version,
            "kind": self.kind,
            "metadata": {
                "name": job_name(run.metadata.name, stage.name, attempt),
                "labels": labels(run.metadata.name, stage.name, attempt),
            },
            "spec": {
                "stage": stage.name,
                "outputDir": stage.output_dir,
                "command": stage_command(stage.name, config_path, nproc),
                "nproc": nproc,
                # torchrun's grace for its workers after SIGTERM (Ctrl-C): as long as a pod's.
                "env": {SHUTDOWN_TIMEOUT_ENV: str(shutdown_timeout(stage.placement))} if nproc > 1 else {},
                "suspend": suspend,
            },
        }

    def observe(self, body: Mapping[str, Any]) -> ObservedJob:
        status = body.get("status") or {}
        state: JobState = next((s for s in _STATES if s == status.get("state")), "Pending")
        suspended = bool((body.get("spec") or {}).get("suspend"))
        return observe_common(body, state, str(status.get("message") or ""), suspended)

    def suspend_patch(self, suspend: bool) -> dict[str, Any]:
        return {"spec": {"suspend": suspend}}

    def master_pod_name(self, job_name: str) -> str | None:
        return None

    def master_pod_selector(self, job_name: str) -> dict[str, str]:
        return {}
