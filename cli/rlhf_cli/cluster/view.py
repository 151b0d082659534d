"""What `rlhf status` shows, pure: the run, its current job and that job's Master pod in, text out.

"Waiting on" names the one thing the run needs next, from the most specific fact at hand:
the run's phase, spec.suspend, a retry's backoff, the job's suspension (Kueue), the pod's
scheduling or container state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rlhf_api.status import RLHFRunStatus, StageStatus
from rlhf_operator.launchers import launcher_of
from rlhf_operator.reconcile.status_store import load_status

from ..report.summary import format_duration, format_metrics, stage_rows
from .progress_view import stage_views, timing

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


@dataclass(frozen=True)
class Observed:
    run: Mapping[str, Any]  # the RLHFRun as the API returned it
    job: Mapping[str, Any] | None = None  # the current stage's job (PyTorchJob or TrainJob)
    pod: Mapping[str, Any] | None = None  # that job's Master pod


def current_stage(status: RLHFRunStatus) -> StageStatus | None:
    named = next((s for s in status.stages if s.name == status.current_stage), None)
    active = next((s for s in status.stages if s.phase in ("Running", "Retrying", "Suspended")), None)
    return active or named


def _pod_problem(pod: Mapping[str, Any]) -> str | None:
    """Why a pod is not running yet: unschedulable, or a container waiting (image pull, ...)."""
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"pod {name} to be scheduled: {cond.get('message') or cond.get('reason') or 'no node fits'}"
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            detail = f": {waiting['message']}" if waiting.get("message") else ""
            return f"pod {name}: container {container.get('name')} is {waiting.get('reason', 'waiting')}{detail}"
    return None


def waiting_on(observed: Observed) -> str:
    run = observed.run
    spec = run.get("spec") or {}
    status = load_status(run.get("status"))
    if status.phase == "Succeeded":
        return "nothing: every stage succeeded"
    if status.phase == "Failed":
        return f"nothing: the run failed ({status.message or 'see the stage table'})"
    if spec.get("suspend") or status.phase == "Suspended":
        return "you: spec.suspend is true; set it to false to resume"
    stalled = next((c for c in status.conditions if c.type == "Stalled" and c.status == "True"), None)
    if stalled is not None:  # the operator cannot go on: a refused write, a foreign job (its words)
        return f"a fix: the operator is stalled ({stalled.reason}): {stalled.message}"
    stage = current_stage(status)
    if not status.stages or stage is None:
        return "the operator: the run has no status yet (is rlhf-operator running and watching this namespace?)"
    if stage.phase == "Retrying":
        reason = f" ({stage.message})" if stage.message else ""
        return f"attempt {stage.attempts + 1} of {stage.name}, after {stage.retry_after or 'its backoff'}{reason}"
    job = observed.job
    if job is None:
        return f"the operator to create {stage.name}'s job" + (f" {stage.job_name}" if stage.job_name else "")
    launcher = launcher_of(run)
    seen = launcher.observe(job)
    name, kind, state, message = seen.name, launcher.kind, seen.state, seen.message
    if seen.suspended:
        queue = ((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)
        return f"Kueue to admit {kind} {name} (queue {queue})" if queue else f"{kind} {name} is suspended"
    if state in ("Pending", "Created"):
        if observed.pod is None:
            return f"the training operator to start the pods of {kind} {name}"
        return _pod_problem(observed.pod) or f"{kind} {name} to start running"
    if state == "Restarting":
        return f"{kind} {name} to restart its pods ({message})" if message else f"{kind} {name} to restart"
    if state == "Running":
        return f"stage {stage.name} to finish training ({kind} {name} is running)"
    return f"the operator to record the result of {kind} {name} ({state})"


def _stage_table(status: RLHFRunStatus, now: dt.datetime) -> Table:
    table = Table(title=None, box=None, header_style="bold", pad_edge=False)
    for column in ("STAGE", "PHASE", "ATTEMPTS", "JOB", "DURATION", "METRICS"):
        table.add_column(column, justify="right" if column == "ATTEMPTS" else "left")
    for row, stage in zip(stage_rows(status, now), status.stages, strict=True):
        table.add_row(
            row.name,
            row.phase,
            str(row.attempts),
            stage.job_name or "-",
            format_duration(row.seconds),
            format_metrics(row.metrics) or "-",
        )
    return table


def progress_line(run: Mapping[str, Any], now: dt.datetime) -> str | None:
    """The running stage's position, as the printer columns show it and more: `sft: step
    120/600 (20%), 2m05s, ETA 4m00s, 0.5 steps/s` (None: no stage runs, or it has not reported)."""
    for view in stage_views(run):
        if view.phase != "Running" or view.step is None:
            continue
        head = f"{view.name}: step {view.step}/{view.total}" if view.total else f"{view.name}: step {view.step}"
        if view.total:
            head += f" ({min(100.0, 100.0 * view.step / view.total):.0f}%)"
        when = timing(view, now)
        return head + (f", {when}" if when else "")
    return None


def _conditions_table(status: RLHFRunStatus) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("CONDITION", "STATUS", "REASON", "SINCE", "MESSAGE"):
        table.add_column(column)
    for cond in status.conditions:
        table.add_row(cond.type, cond.status, cond.reason, cond.last_transition_time, cond.message)
    return table


def render(observed: Observed, now: dt.datetime) -> RenderableType:
    meta = observed.run.get("metadata") or {}
    status = load_status(observed.run.get("status"))
    head = Text.assemble(
        ("RLHFRun ", "bold"),
        f"{meta.get('namespace', '?')}/{meta.get('name', '?')}  ",
        ("phase ", "bold"),
        status.phase,
        ("  stage ", "bold"),
        status.current_stage or "-",
    )
    generation, observed_generation = meta.get("generation"), status.observed_generation
    if generation is not None and observed_generation is not None and generation != observed_generation:
        head.append(f"  (spec generation {generation}, operator has seen {observed_generation})")
    parts: list[RenderableType] = [head]
    if status.message:
        parts.append(Text(status.message))
    parts += [Text(""), _stage_table(status, now)]
    position = progress_line(observed.run, now)
    if position is not None:
        parts.append(Text(position))
    for stage in status.stages:
        if stage.message and stage.phase in ("Failed", "Retrying"):
            parts.append(Text(f"{stage.name}: {stage.message}", style="red" if stage.phase == "Failed" else ""))
    if status.conditions:
        parts += [Text(""), _conditions_table(status)]
    parts += [Text(""), Text.assemble(("Waiting on: ", "bold"), waiting_on(observed))]
    return Group(*parts)
