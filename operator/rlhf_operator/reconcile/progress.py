"""A running stage's progress events folded into its status: progress, guards, hang deadline. Pure.

The caller reads the events (the kopf shell from the Master pod's log at most once per
interval, `rlhf run` from the stage process) and hands them to `reconcile` as a
ProgressReading per job; this module decides what they mean:
- the stage's `progress` (rlhf_api.progress_status.fold);
- guards (rlhf_api.guards.evaluate) on every new event: a trip sets Healthy=False with a
  Warning naming the metric and its value (one per episode, while Healthy is already False the
  message only follows the values); `stop` ends the attempt and fails the stage without a retry
  (its checkpoints stay on the volume); a batch whose numbers all pass sets Healthy=True again;
- the hang deadline: while the job runs and its log was read this pass, no progress event for
  progressDeadlineSeconds (startupProgressDeadlineSeconds before the attempt's first event,
  counted from when the job was first seen running) ends the attempt as a failed, retried one.
Nothing here looks at the clock except the deadline, and that only when a reading arrived.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rlhf_api import reasons
from rlhf_api.guards import Guards, Trip, describe, evaluate
from rlhf_api.progress_status import TimedEvent, eta_text, fold, new_events, parse_time, percent_text
from rlhf_api.spec import StageControl
from rlhf_api.status import Condition, RLHFRunStatus, StageStatus, condition

from ..observed_job import ObservedJob
from .events import rfc3339

# (transition key, message, reason, warning): _Step.note
Note = Callable[[str, str, str, bool], None]
# Before the first event of an attempt (loading models and data, the first step), unless given.
STARTUP_FACTOR = 3
STARTUP_MINIMUM_SECONDS = 1800


@dataclass(frozen=True)
class ProgressReading:
    """What the caller read of one stage job's progress events since its last reading."""

    events: tuple[TimedEvent, ...] = ()
    # False when the log could not be read this time (not running yet, an API error): the
    # events are partial, so no hang is concluded from their absence.
    complete: bool = True
    # What the reader dropped or clamped (lines that are not usable progress, a skipped burst, a
    # step above its total), in words: given once per job by the reader, said in a Warning.
    dropped: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """End the attempt: why, with which reason, and whether the stage gets another attempt."""

    why: str
    reason: str
    retry: bool


def stage_controls(section: StageControl | None) -> tuple[int | None, int | None, Guards | None]:
    """(progressDeadlineSeconds, startup allowance, guards) of a stage section (any kind)."""
    if section is None:
        return None, None, None
    deadline = section.progress_deadline_seconds
    startup = section.startup_progress_deadline_seconds
    if deadline is not None and startup is None:
        startup = max(STARTUP_FACTOR * deadline, STARTUP_MINIMUM_SECONDS)
    return deadline, startup, section.guards


def follow(
    status: RLHFRunStatus,
    stage: StageStatus,
    job: ObservedJob,
    reading: ProgressReading | None,
    section: Any,
    now: datetime,
    generation: int | None,
    note: Note,
) -> Verdict | None:
    """Fold a running stage's reading into its status; a Verdict when the attempt must end."""
    deadline, startup, guards = stage_controls(section)
    # The pods run: the job says so, or (TrainJob has no Running condition) its log could be read.
    running = job.state == "Running" or (job.state == "Created" and reading is not None and reading.complete)
    if deadline is not None and running and stage.running_since is None:
        stage.running_since = rfc3339(now)
    if reading is None:
        return None
    fresh = new_events(stage.progress, reading.events)
    stage.progress = fold(stage.progress, fresh)
    verdict = _judge_guards(status, stage, guards, fresh, now, generation, note)
    if verdict is not None or not reading.complete or not running:
        return verdict
    return _judge_deadline(stage, deadline, startup, now)


def new_attempt(stage: StageStatus) -> None:
    """A new attempt (a new pod, a new log): the position stays on show, but the speed and the
    last event's time were the previous attempt's. With no lastProgressTime the hang deadline
    gives the startup allowance, and the speed is measured afresh."""
    stage.running_since = None
    if stage.progress is not None:
        stage.progress = stage.progress.model_copy(
            update={"last_progress_time": None, "steps_per_second": None, "estimated_completion_time": None}
        )


def finished(stage: StageStatus, steps: int | None, planned: int | None) -> None:
    """A succeeded stage's progress ends where its result says (the last lines before the exit
    are usually not read: the job is not followed once it finished)."""
    if stage.progress is None or steps is None:
        return
    total = planned or stage.progress.total_steps
    stage.progress = stage.progress.model_copy(
        update={
            "step": steps,
            "total_steps": total,
            "percent": round(min(100.0, 100.0 * steps / total), 1) if total else None,
            "estimated_completion_time": None,
        }
    )


def _latest_per_metric(trips: list[Trip]) -> list[Trip]:
    latest: dict[str, Trip] = {}
    for trip in trips:
        latest[trip.metric] = trip
    return list(latest.values())


def _healthy(status: RLHFRunStatus) -> Condition | None:
    return next((c for c in status.conditions if c.type == reasons.HEALTHY), None)


def _set_healthy(
    status: RLHFRunStatus, value: bool, reason: str, message: str, now: datetime, generation: int | None
) -> None:
    new = condition(reasons.HEALTHY, value, reason, message[:32768], rfc3339(now), generation, status.conditions)
    status.conditions = [c for c in status.conditions if c.type != reasons.HEALTHY] + [new]


def _judge_guards(
    status: RLHFRunStatus,
    stage: StageStatus,
    guards: Guards | None,
    fresh: list[TimedEvent],
    now: datetime,
    generation: int | None,
    note: Note,
) -> Verdict | None:
    trips = _latest_per_metric([trip for item in fresh for trip in evaluate(guards, item.event)])
    healthy = _healthy(status)
    if not trips:
        judged = any(isinstance(item.event.get("step"), int | float) for item in fresh)
        if judged and healthy is not None and healthy.status == "False":
            message = f"the latest numbers of stage {stage.name} pass every guard"
            _set_healthy(status, True, reasons.GUARDS_PASSING, message, now, generation)
        return None
    text = describe(trips)
    message = f"stage {stage.name} at step {stage.progress.step if stage.progress else 0}: {text}"
    if healthy is None or healthy.status != "False":
        key = f"{stage.name}-guard-{stage.attempts}-{stage.progress.step if stage.progress else 0}"
        note(key, message, reasons.GUARD_TRIPPED, True)
    _set_healthy(status, False, reasons.GUARD_TRIPPED, message, now, generation)
    if any(trip.action == "stop" for trip in trips):
        return Verdict(f"stopped by its guard ({text}); its checkpoints are kept", reasons.GUARD_TRIPPED, retry=False)
    return None


def _judge_deadline(stage: StageStatus, deadline: int | None, startup: int | None, now: datetime) -> Verdict | None:
    since = parse_time(stage.running_since)
    if deadline is None or startup is None or since is None:
        return None
    last = parse_time(stage.progress.last_progress_time) if stage.progress is not None else None
    if last is not None:  # this attempt has reported (new_attempt cleared the previous one's time)
        if (now - last).total_seconds() > deadline:
            why = f"stalled: no progress event for {deadline}s (progressDeadlineSeconds) since {rfc3339(last)}"
            return Verdict(why, reasons.STAGE_STALLED, retry=True)
    elif (now - since).total_seconds() > startup:
        why = f"stalled: no progress event within {startup}s of starting (startupProgressDeadlineSeconds)"
        return Verdict(why, reasons.STAGE_STALLED, retry=True)
    return None


def summarize(status: RLHFRunStatus, generation: int | None) -> None:
    """The run-level progress fields the printer columns show (JSONPath cannot pick the current
    stage from the list): finished stages of all, and the current stage's percent and ETA. The
    Healthy condition stays about the current generation (health checks skip stale conditions):
    a spec change (e.g. suspend) does not make a tripped guard untrue."""
    for cond in status.conditions:
        if cond.type == reasons.HEALTHY:
            cond.observed_generation = generation
    done = sum(1 for s in status.stages if s.phase in ("Succeeded", "Skipped"))
    status.progress = f"{done}/{len(status.stages)} stages" if status.stages else None
    current = next((s for s in status.stages if s.name == status.current_stage), None)
    active = current is not None and current.phase == "Running"
    status.stage_progress = percent_text(current.progress) if active and current else None
    status.eta = eta_text(current.progress) if active and current else None


def running_jobs(status: RLHFRunStatus, jobs: Mapping[str, ObservedJob]) -> list[str]:
    """The jobs whose progress is worth reading: a Running stage's job whose pods run or were
    created (TrainJob reports no Running condition; a container not started yet answers 400)."""
    names = [s.job_name for s in status.stages if s.phase == "Running" and s.job_name]
    return [name for name in names if name in jobs and jobs[name].state in ("Running", "Created")]
