"""What stops a pass from creating a child, and how it shows (issue 16, items 2 and 4). Pure.

- A *foreign* job: one with this run's name and labels that this run (by uid) does not control,
  as controller-runtime's IsControlledBy: an owner-less job (the old run was deleted with
  `--cascade=orphan`) or one of a stale uid (a re-created run of the same name). It is never
  adopted: never followed, never read as a result, never counted as an attempt. Job names stay
  deterministic (no uid in them), so the stage waits, Stalled=True with reason JobConflict and a
  Warning naming the job, until the job is gone; a foreign job already being deleted and held
  by the stage-outcome finalizer is released at once (its run is gone), so `kubectl replace
  --force` and an Argo CD replace-sync go through on their own. Why not a uid in the name: the
  old job may still be training into the same volume; starting the new run beside it would
  have two jobs write one checkpoint directory.
- A *refused* write: the API server answered 4xx (400/403/404/422: an invalid quantity, a
  ResourceQuota, admission) and retrying the same write cannot help by itself. The child is not
  counted as made (a refused job is no attempt; a refused claim mounts nothing), the run is
  Stalled=True with reason CreateRefused and the server's message, a Warning is posted once, and
  the shell retries later with a capped backoff (a quota may be raised, the spec fixed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rlhf_api import reasons

from ..observed_job import ObservedJob


@dataclass(frozen=True)
class Blocked:
    """The shell's findings for a pass: foreign jobs by name, refused writes by child name."""

    foreign: Mapping[str, ObservedJob] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)  # child name -> "<write>: <server's message>"

    def __bool__(self) -> bool:
        return bool(self.foreign or self.refused)


@dataclass(frozen=True)
class Stall:
    reason: str
    message: str
    key: str  # the event's transition key (one Warning per distinct stall)


def foreign_owner(job: ObservedJob) -> str:
    return f"controlled by another run (uid {job.owner_uid})" if job.owner_uid else "without an owner"


def conflict(job: ObservedJob) -> Stall:
    message = (
        f"job {job.name} exists {foreign_owner(job)}: not this run's (a run of the same name deleted with "
        f"--cascade=orphan, or re-created); delete job {job.name} to let this run start it"
    )
    return Stall(reasons.JOB_CONFLICT, message, f"conflict-{job.name}-{job.owner_uid or 'none'}")


def refusal(name: str, message: str) -> Stall:
    return Stall(reasons.CREATE_REFUSED, message, f"refused-{name}-{message}")
