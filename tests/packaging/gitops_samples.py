"""RLHFRun objects in the states a GitOps tool sees, shared by the Argo CD and Flux tests.

Statuses are built with the operator's own status models and its kstatus_conditions(), so the
samples cannot drift from what the operator writes.
"""

from __future__ import annotations

from typing import Any

from rlhf_api import reasons
from rlhf_api.status import RLHFRunStatus, RunPhase, StageStatus, condition, kstatus_conditions

T0 = "2026-01-01T00:00:00Z"


def run(status: RLHFRunStatus | None, generation: int = 3, suspend: bool = False) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "rlhf.dev/v1alpha1",
        "kind": "RLHFRun",
        "metadata": {"name": "demo", "namespace": "ml", "generation": generation},
        "spec": {"model": {"name": "builtin:tiny-llama"}, "pipeline": ["sft", "dpo"], "suspend": suspend},
    }
    if status is not None:
        obj["status"] = status.model_dump(by_alias=True, exclude_none=True)
    return obj


def _status(phase: RunPhase, reason: str, message: str, stages: list[StageStatus]) -> RLHFRunStatus:
    return RLHFRunStatus(
        phase=phase,
        current_stage="dpo",
        observed_generation=3,
        message=message,
        stages=stages,
        conditions=kstatus_conditions(phase, reason, message, T0, 3),
    )


def running() -> RLHFRunStatus:
    stages = [StageStatus(name="sft", phase="Succeeded"), StageStatus(name="dpo", phase="Running")]
    return _status("Running", "StageRunning", "stage dpo running (job demo-dpo-1, attempt 1)", stages)


def succeeded() -> RLHFRunStatus:
    stages = [StageStatus(name="sft", phase="Succeeded"), StageStatus(name="dpo", phase="Succeeded")]
    return _status("Succeeded", "Succeeded", "all stages finished", stages)


def failed() -> RLHFRunStatus:
    stages = [StageStatus(name="sft", phase="Succeeded"), StageStatus(name="dpo", phase="Failed")]
    return _status("Failed", "StageFailed", "stage dpo failed after 3 attempts: CUDA out of memory", stages)


def suspended() -> RLHFRunStatus:
    stages = [StageStatus(name="sft", phase="Succeeded"), StageStatus(name="dpo", phase="Suspended")]
    return _status("Suspended", "Suspended", "stage dpo suspended", stages)


def unhealthy(base: RLHFRunStatus | None = None) -> RLHFRunStatus:
    """A guard tripped (warn: the stage trains on), as reconcile/progress.py writes it."""
    status = base or running()
    message = "stage dpo at step 120: guard tripped: kl=0.93 (> maxKL 0.5)"
    status.conditions.append(condition(reasons.HEALTHY, False, reasons.GUARD_TRIPPED, message, T0, 3))
    return status


def recovered() -> RLHFRunStatus:
    status = running()
    message = "the latest numbers of stage dpo pass every guard"
    status.conditions.append(condition(reasons.HEALTHY, True, reasons.GUARDS_PASSING, message, T0, 3))
    return status


def pending() -> RLHFRunStatus:
    return _status("Pending", "Pending", "waiting to start", [StageStatus(name="sft"), StageStatus(name="dpo")])


# (name, object, Argo CD health, Flux status). Flux: Current / Failed / InProgress.
SAMPLES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no status yet", run(None), "Progressing", "InProgress"),
    ("pending", run(pending()), "Progressing", "InProgress"),
    ("running", run(running()), "Progressing", "InProgress"),
    ("succeeded", run(succeeded()), "Healthy", "Current"),
    ("failed", run(failed()), "Degraded", "Failed"),
    ("suspended", run(suspended(), suspend=True), "Suspended", "InProgress"),
    ("guard tripped while running", run(unhealthy()), "Degraded", "Failed"),
    ("guard tripped, then succeeded", run(unhealthy(succeeded())), "Degraded", "Failed"),
    ("guard passing again", run(recovered()), "Progressing", "InProgress"),
    ("guard tripped, stale generation", run(unhealthy(), generation=4), "Progressing", "InProgress"),
    # The spec changed (generation 4) but the operator has not acted on it yet: an old
    # Succeeded/Failed status says nothing about the new spec.
    ("stale succeeded", run(succeeded(), generation=4), "Progressing", "InProgress"),
    ("stale failed", run(failed(), generation=4), "Progressing", "InProgress"),
]
