"""The launcher seam: everything that differs between job kinds that run a stage.

A launcher builds a stage's job for one attempt, reads the job's state back, says how to
suspend and resume it, and where its Master pod (the one holding the stage result) is. The
state machine (reconcile) and the kopf shell only talk to this interface; adding a job kind
(e.g. JobSet) is one new module here plus its entry in launchers/__init__.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from rlhf_api.naming import STAGE_JOB_FINALIZER
from rlhf_api.spec import RLHFRun

from ..api_ref import ApiRef
from ..observed_job import ObservedJob
from ..plan import StagePlan
from ..settings import OperatorSettings


class Launcher(Protocol):
    name: str  # the value of spec.launcher that selects it
    kind: str
    api: ApiRef
    result_container: str  # the container whose termination message is the stage result

    def build_job(
        self,
        run: RLHFRun,
        stage: StagePlan,
        attempt: int,
        owner: dict[str, Any] | None,
        settings: OperatorSettings,
        suspend: bool,
    ) -> dict[str, Any]:
        """The stage's job for one attempt (a new job per attempt; deterministic name)."""
        ...

    def observe(self, body: Mapping[str, Any]) -> ObservedJob:
        """The job's state, folded into the launcher-independent ObservedJob."""
        ...

    def suspend_patch(self, suspend: bool) -> dict[str, Any]:
        """A merge patch that suspends (True) or resumes (False) the job."""
        ...

    def master_pod_name(self, job_name: str) -> str | None:
        """The Master pod's name when the launcher makes it predictable (one cheap GET), else None."""
        ...

    def master_pod_selector(self, job_name: str) -> dict[str, str]:
        """Labels selecting the Master pod."""
        ...


def release_patch(job: ObservedJob) -> dict[str, Any]:
    """A merge patch removing the operator's finalizer, other finalizers kept. The
    resourceVersion makes it fail (409) rather than drop a finalizer added meanwhile."""
    kept = [f for f in job.finalizers if f != STAGE_JOB_FINALIZER]
    metadata: dict[str, Any] = {"finalizers": kept or None}
    if job.resource_version:
        metadata["resourceVersion"] = job.resource_version
    return {"metadata": metadata}
