"""What the state machine sees of a stage job, whichever launcher ran it. Pure, no I/O.

Each launcher folds its job kind's conditions into one JobState (launchers/*.observe); the
fields every kind shares (labels, owner, deletion, finalizers) are read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rlhf_api.naming import ATTEMPT_LABEL, RUN_LABEL, STAGE_JOB_FINALIZER, STAGE_LABEL
from rlhf_api.result import StageResult

from .pod_waiting import Waiting, start_clock

JobState = Literal["Pending", "Created", "Running", "Restarting", "Suspended", "Succeeded", "Failed"]
JOB_STATES: tuple[JobState, ...] = (
    "Pending",
    "Created",
    "Running",
    "Restarting",
    "Suspended",
    "Succeeded",
    "Failed",
)


@dataclass(frozen=True)
class ObservedJob:
    """One stage job as last seen (or as just created, before the watch reports it)."""

    name: str
    state: JobState
    suspended: bool = False
    message: str = ""
    stage: str | None = None
    attempt: int | None = None
    owner_uid: str | None = None
    run_label: str | None = None
    # Set once someone (a user, the TTL controller, the garbage collector) deleted the job:
    # it stays, held by the operator's finalizer, until its outcome is in the run's status.
    deleting: bool = False
    finalizers: tuple[str, ...] = ()
    resource_version: str | None = None
    result: StageResult | None = None
    result_error: str | None = None
    # Starting: when its pods were first asked for (creation or last resume; pod_waiting.start_clock),
    # whether one got past Pending, and why they wait (filled in by the shell from the pods).
    start_clock: str | None = None
    pods_started: bool = False
    waiting: Waiting | None = None

    @property
    def held(self) -> bool:
        """The operator's finalizer is on the job: it cannot vanish before being released."""
        return STAGE_JOB_FINALIZER in self.finalizers

    @property
    def finished(self) -> bool:
        return self.state in ("Succeeded", "Failed")


def observe_common(body: Mapping[str, Any], state: JobState, message: str, suspended: bool) -> ObservedJob:
    """An ObservedJob from the metadata every job kind has, plus the launcher's reading."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    attempt_text = labels.get(ATTEMPT_LABEL)
    owner_uid = next(
        (ref.get("uid") for ref in meta.get("ownerReferences") or [] if ref.get("controller")),
        None,
    )
    return ObservedJob(
        name=str(meta.get("name")),
        state=state,
        suspended=suspended,
        message=message,
        stage=labels.get(STAGE_LABEL),
        attempt=int(attempt_text) if attempt_text and attempt_text.isdigit() else None,
        owner_uid=owner_uid,
        run_label=labels.get(RUN_LABEL),
        deleting=bool(meta.get("deletionTimestamp")),
        finalizers=tuple(str(f) for f in meta.get("finalizers") or ()),
        resource_version=meta.get("resourceVersion"),
        start_clock=start_clock(body),
    )


def true_conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The job's conditions whose status is True, by type."""
    found: dict[str, Mapping[str, Any]] = {}
    for cond in status.get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("status") == "True" and cond.get("type"):
            found[str(cond["type"])] = cond
    return found


def state_from_conditions(body: Mapping[str, Any], table: tuple[tuple[str, JobState], ...]) -> tuple[JobState, str]:
    """The first condition of `table` (most decisive first) that is True, and its message."""
    conditions = true_conditions(body.get("status") or {})
    for kind, state in table:
        if kind in conditions:
            cond = conditions[kind]
            return state, str(cond.get("message") or cond.get("reason") or "")
    return "Pending", ""
