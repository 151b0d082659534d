"""Has this attempt started, why not, and is it past its start deadline? Pure.

An attempt has started when its job says so (Running, Restarting, or finished) or one of its
pods got past Pending (a TrainJob reports no Running condition). Until then the reconcile
re-checks its pods every `poll` seconds (there is no pod watch: pods change without their job
changing), shows why they wait, and fails the attempt once `startDeadlineSeconds` have passed
since the start clock (the job's creation, or its last resume: a suspended or queued job is
not waiting for its pods).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rlhf_api.progress_status import parse_time

from ..observed_job import ObservedJob
from ..pod_waiting import Waiting
from .status_store import load_status

STARTED_STATES = frozenset({"Running", "Restarting", "Succeeded", "Failed"})


@dataclass(frozen=True)
class StartCheck:
    started: bool
    waiting: Waiting | None = None
    overdue: bool = False
    recheck_after: float | None = None  # seconds until the next look at the pods


def starting(job: ObservedJob) -> bool:
    """The job exists on the server, runs (not suspended, not being deleted) and has not started."""
    return (
        job.start_clock is not None
        and not job.suspended
        and not job.deleting
        and job.state not in STARTED_STATES
        and not job.pods_started
    )


def start_check(job: ObservedJob, deadline_seconds: int | None, now: datetime, poll: float) -> StartCheck:
    if not starting(job):
        return StartCheck(started=job.state in STARTED_STATES or job.pods_started)
    since = parse_time(job.start_clock)
    if since is None or deadline_seconds is None:
        return StartCheck(started=False, waiting=job.waiting, recheck_after=poll)
    left = (since + timedelta(seconds=deadline_seconds) - now).total_seconds()
    if left <= 0:
        return StartCheck(started=False, waiting=job.waiting, overdue=True)
    return StartCheck(started=False, waiting=job.waiting, recheck_after=min(poll, left))


def jobs_to_inspect(status_raw: Any, jobs: Mapping[str, ObservedJob]) -> list[str]:
    """The running stages' jobs that have not started yet: the shell reads their pods."""
    status = load_status(status_raw)
    names = []
    for stage in status.stages:
        job = jobs.get(stage.job_name or "")
        if job is not None and stage.phase == "Running" and starting(job):
            names.append(job.name)
    return names


def waiting_prefix(attempt: int) -> str:
    return f"attempt {attempt} waiting to start: "
