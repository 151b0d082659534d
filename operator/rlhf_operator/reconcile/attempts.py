"""Attempts never overlap: attempt N+1 starts only when no pod of attempt N is left. Pure.

A failed or deleted job's pods can still run for terminationGracePeriodSeconds (600 s by
default, time to save a checkpoint) after the job is gone or Failed. Like a Job with
`podReplacementPolicy: Failed`, the next attempt waits until every pod of the previous one
has terminated (phase Succeeded or Failed) or is gone. The kopf shell lists the previous
attempt's pods by their run/stage/attempt labels and passes what is left to the reconcile; the
trainer's output-dir lease (rlhf_trainer.checkpoint_lease) is the second guard.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rlhf_api.status import RLHFRunStatus

from ..observed_job import ObservedJob

# How often a waiting retry looks again (pod deletions arrive by watch; this bounds a missed one).
RECHECK_SECONDS = 5.0


def pods_left(pods: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """Names of the pods that may still run a process: not yet Succeeded or Failed."""
    return tuple(
        sorted(
            str((pod.get("metadata") or {}).get("name"))
            for pod in pods
            if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        )
    )


def previous_attempts(status: RLHFRunStatus, jobs: Mapping[str, ObservedJob]) -> list[tuple[str, int]]:
    """(stage, attempt) whose pods to list: the stages that may start their next attempt in this
    pass (retrying, or whose job finished, is gone or is being deleted: a preemption or a
    zero backoff retries in the same pass that sees the failure)."""
    found: list[tuple[str, int]] = []
    for stage in status.stages:
        if stage.attempts <= 0:
            continue
        job = jobs.get(stage.job_name or "")
        ended = job is None or job.finished or job.deleting
        if stage.phase == "Retrying" or (stage.phase in ("Running", "Suspended") and ended):
            found.append((stage.name, stage.attempts))
    return found


def wait_message(stage: str, attempt: int, left: tuple[str, ...]) -> str:
    shown = ", ".join(left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
    return f"attempt {attempt + 1} waits until no pod of attempt {attempt} is left ({shown})"
