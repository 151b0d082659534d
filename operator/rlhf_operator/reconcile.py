"""The operator's state machine: (run body, observed jobs, now) -> (actions, new status). Pure.

The kopf handlers read, call `reconcile`, apply the actions (create-if-absent, job suspend
patches), patch the status once when it changed and post one event per transition. Calling
`reconcile` again with its own output status and the same observations yields no actions and
the same status (idempotence), which is what makes restarts and repeated watch events harmless.

Stage phases: Pending -> Running -> Succeeded | Retrying -> Running ... | Failed; Skipped when
the spec gives the stage's output (existingOutput); Suspended while spec.suspend holds the job.

Children: the PVC on the first pass (unless existingClaim), then per stage, when it starts, its
trainer ConfigMap and its job (attempt N: a new job per retry, the ConfigMap is reused). Write
budget of a 3-stage run: PVC 1 + ConfigMaps 3 + jobs 3 + status patches 4 + events 4 = 15.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError
from rlhf_api.naming import job_name
from rlhf_api.spec import API_VERSION, KIND, RLHFRun
from rlhf_api.status import RLHFRunStatus, RunPhase, StageStatus, kstatus_conditions
from rlhf_api.validation import RunInvalid, parse_run

from . import manifests
from .observe import ObservedJob
from .plan import StagePlan, plan
from .settings import OperatorSettings

EVENT_SOURCE = "rlhf-operator"
EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class ApiRef:
    """Where a kind lives in the API: core (group "") or a named group."""

    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


PVCS = ApiRef("", "v1", "persistentvolumeclaims")
CONFIGMAPS = ApiRef("", "v1", "configmaps")
EVENTS = ApiRef("", "v1", "events")
PODS = ApiRef("", "v1", "pods")


@dataclass(frozen=True)
class Create:
    """Create if absent: 409 means it is already there (deterministic names)."""

    api: ApiRef
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])


@dataclass(frozen=True)
class PatchJob:
    """Merge-patch a stage job (suspend / resume)."""

    api: ApiRef
    name: str
    patch: dict[str, Any]


@dataclass(frozen=True)
class PostEvent:
    body: dict[str, Any]


Action = Create | PatchJob | PostEvent


@dataclass
class Outcome:
    actions: list[Action]
    status: RLHFRunStatus
    old_status: dict[str, Any]
    requeue_after: float | None = None  # seconds until a timed transition (retry backoff)
    transitions: list[str] = field(default_factory=list)

    @property
    def new_status(self) -> dict[str, Any]:
        return dump_status(self.status)

    @property
    def status_patch(self) -> dict[str, Any]:
        """RFC 7386 merge patch from the stored status to the new one ({} = nothing to write)."""
        return merge_patch(self.old_status, self.new_status)

    @property
    def writes(self) -> list[Create | PatchJob]:
        return [a for a in self.actions if not isinstance(a, PostEvent)]

    @property
    def events(self) -> list[PostEvent]:
        return [a for a in self.actions if isinstance(a, PostEvent)]


# --- small pure helpers -------------------------------------------------------------------


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def dump_status(status: RLHFRunStatus) -> dict[str, Any]:
    return status.to_file_dict()


def load_status(raw: Any) -> RLHFRunStatus:
    """The stored status; an unreadable one (hand-edited, older schema) starts over empty."""
    if not isinstance(raw, Mapping):
        return RLHFRunStatus()
    try:
        return RLHFRunStatus.model_validate(dict(raw))
    except ValidationError:
        return RLHFRunStatus()


def merge_patch(old: Any, new: Any) -> Any:
    """The smallest JSON merge patch turning `old` into `new` (None removes a key)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            if isinstance(old[key], dict) and isinstance(value, dict):
                patch[key] = merge_patch(old[key], value)
            else:
                patch[key] = value
    return patch


def backoff_seconds(plan_: StagePlan, failed_attempt: int) -> int:
    """retryBackoffSeconds * 2**(n-1) after the n-th failed attempt."""
    return int(plan_.retry_backoff_seconds * 2 ** max(0, failed_attempt - 1))


def suspend_patch(launcher: str, suspend: bool) -> dict[str, Any]:
    if launcher == "trainjob":
        return {"spec": {"suspend": suspend}}
    return {"spec": {"runPolicy": {"suspend": suspend}}}


def job_api(run: RLHFRun) -> ApiRef:
    group, version, plural = manifests.job_api(run)
    return ApiRef(group, version, plural)


def results_needed(status_raw: Any, jobs: Mapping[str, ObservedJob]) -> list[str]:
    """Finished jobs whose stage has not taken note yet: their master pod's termination message
    is the stage result (Succeeded) or the trainer's last words (Failed)."""
    status = load_status(status_raw)
    needed = []
    for stage in status.stages:
        job = jobs.get(stage.job_name or "")
        if job is None or stage.phase not in ("Running", "Suspended"):
            continue
        if job.state in ("Succeeded", "Failed"):
            needed.append(job.name)
    return needed


# --- events ---------------------------------------------------------------------------------


def event_body(
    meta: Mapping[str, Any], key: str, type_: EventType, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """A core/v1 Event with a deterministic name: re-posting the same transition is a 409."""
    run_name = str(meta.get("name"))
    uid = str(meta.get("uid") or "")
    digest = hashlib.sha256(f"{uid}\0{key}".encode()).hexdigest()[:12]
    stamp = rfc3339(now)
    involved = {"apiVersion": API_VERSION, "kind": KIND, "name": run_name}
    if meta.get("namespace"):
        involved["namespace"] = str(meta["namespace"])
    if uid:
        involved["uid"] = uid
    metadata: dict[str, Any] = {"name": f"{run_name[:200]}.{digest}"}
    if meta.get("namespace"):
        metadata["namespace"] = meta["namespace"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": metadata,
        "involvedObject": involved,
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "source": {"component": EVENT_SOURCE},
        "reportingComponent": EVENT_SOURCE,
        "reportingInstance": EVENT_SOURCE,
    }


# --- the state machine ------------------------------------------------------------------------


@dataclass
class _Step:
    """Accumulates one reconcile pass: actions, transitions and the most important event."""

    run: RLHFRun
    body: Mapping[str, Any]
    settings: OperatorSettings
    now: datetime
    owner: dict[str, Any] | None
    actions: list[Action] = field(default_factory=list)
    transitions: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    warning: bool = False
    reason: str | None = None
    requeue_after: float | None = None

    def note(self, key: str, message: str, reason: str, warning: bool = False) -> None:
        self.transitions.append(key)
        self.messages.append(message)
        # The event's reason is the first warning's, else the last transition's.
        if warning and not self.warning:
            self.reason, self.warning = reason, True
        elif not self.warning:
            self.reason = reason

    def requeue(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)

    def launch(self, stage_plan: StagePlan, stage: StageStatus, attempt: int, with_config: bool = True) -> None:
        """The stage's job for `attempt`, preceded by its trainer config (a ConfigMap per stage,
        created when the stage starts; a retry reuses it; a re-created job re-ensures it)."""
        if with_config:
            configmap = manifests.build_stage_configmap(self.run, stage_plan, self.owner)
            self.actions.append(Create(CONFIGMAPS, configmap))
        suspend = self.run.spec.suspend or self.run.spec.queue_name is not None
        job = manifests.build_stage_job(self.run, stage_plan, attempt, self.owner, self.settings, suspend)
        self.actions.append(Create(job_api(self.run), job))
        stage.phase = "Suspended" if self.run.spec.suspend else "Running"
        stage.job_name = str(job["metadata"]["name"])
        stage.attempts = attempt
        stage.retry_after = None
        stage.start_time = stage.start_time or rfc3339(self.now)
        if attempt == 1:
            stage.message = None
            self.note(f"{stage.name}-start-1", f"stage {stage.name} started (job {stage.job_name})", "StageStarted")
        else:
            self.note(
                f"{stage.name}-start-{attempt}",
                f"stage {stage.name} attempt {attempt} started (job {stage.job_name})",
                "StageRetried",
            )


_PARSED: OrderedDict[tuple[str, ...], tuple[RLHFRun, list[StagePlan]]] = OrderedDict()
_PARSED_MAX = 512
_PARSED_META = ("name", "namespace", "uid", "generation", "labels", "annotations")


def _parsed(body: Mapping[str, Any], settings: OperatorSettings) -> tuple[RLHFRun, list[StagePlan]]:
    """parse_run + plan, memoized on the spec and identifying metadata: validating the spec
    on every watch event was the largest per-pass cost, and it only changes with the spec."""
    meta = body.get("metadata") or {}
    key: tuple[str, ...] | None = None
    try:
        key = (
            json.dumps(
                [body.get("apiVersion"), body.get("kind"), {k: meta.get(k) for k in _PARSED_META}, body.get("spec")],
                sort_keys=True,
            ),
            settings.model_dump_json(),
        )
    except (TypeError, ValueError):
        key = None  # not JSON (cannot come from the API): no memo
    if key is not None and key in _PARSED:
        _PARSED.move_to_end(key)
        return _PARSED[key]
    run = parse_run(body)
    parsed = run, plan(run, run.spec.storage.mount_path, settings.trainer_image)
    if key is not None:
        _PARSED[key] = parsed
        while len(_PARSED) > _PARSED_MAX:
            _PARSED.popitem(last=False)
    return parsed


def _invalid(body: Mapping[str, Any], status: RLHFRunStatus, error: RunInvalid, now: datetime) -> RLHFRunStatus:
    generation = (body.get("metadata") or {}).get("generation")
    message = "invalid spec: " + "; ".join(error.errors)
    status.phase = "Failed"
    status.message = message[:32768]
    status.observed_generation = generation
    status.conditions = kstatus_conditions(
        "Failed", "InvalidSpec", status.message, rfc3339(now), generation, status.conditions
    )
    return status


def _immutable_violation(run: RLHFRun, status: RLHFRunStatus) -> str | None:
    """Spec fields that may not change once the run started (the CRD's CEL rules, checked again)."""
    if status.stages and [s.name for s in status.stages] != list(run.spec.pipeline):
        return f"pipeline: immutable once the run exists (was {[s.name for s in status.stages]})"
    if status.volume_claim and status.volume_claim != manifests.claim_name(run):
        return f"storage: immutable once the run exists (the run uses claim {status.volume_claim})"
    return None


def reconcile(
    body: Mapping[str, Any],
    jobs: Mapping[str, ObservedJob],
    now: datetime,
    settings: OperatorSettings,
) -> Outcome:
    """One pass of the state machine over a run; see the module docstring."""
    meta = body.get("metadata") or {}
    generation = meta.get("generation")
    old_raw = body.get("status") if isinstance(body.get("status"), Mapping) else {}
    old_status = dump_status(load_status(old_raw))
    status = load_status(old_raw)
    now_text = rfc3339(now)

    try:
        run, plans = _parsed(body, settings)
    except RunInvalid as error:
        new = _invalid(body, status, error, now)
        outcome = Outcome([], new, old_status)
        if outcome.status_patch:
            outcome.actions.append(
                PostEvent(event_body(meta, f"invalid-{generation}", "Warning", "InvalidSpec", new.message or "", now))
            )
        return outcome

    if status.phase == "Failed" and _stalled_reason(status) == "InvalidSpec":
        # The spec was fixed: carry on from the stages' state.
        status.phase = "Running" if any(s.phase != "Pending" for s in status.stages) else "Pending"
        status.message = None

    step = _Step(run, body, settings, now, manifests.owner_reference(body))

    violation = _immutable_violation(run, status)
    if violation is not None:
        status.message = violation
        status.observed_generation = generation
        status.conditions = _stalled_without_failing(status, violation, now_text, generation)
        outcome = Outcome([], status, old_status)
        if outcome.status_patch:
            outcome.actions.append(
                PostEvent(event_body(meta, f"immutable-{generation}", "Warning", "SpecChangeRejected", violation, now))
            )
        return outcome

    if not status.stages:
        status.stages = [StageStatus(name=p.name) for p in plans]

    if status.phase not in ("Succeeded", "Failed"):
        if status.volume_claim is None:
            _set_up(step)
            status.volume_claim = manifests.claim_name(run)
        _advance(step, plans, status, jobs)

    _summarize(step, status, generation, now_text)

    outcome = Outcome(step.actions, status, old_status, step.requeue_after, step.transitions)
    if step.transitions and outcome.status_patch:
        key = ",".join(step.transitions)
        outcome.actions.append(
            PostEvent(
                event_body(
                    meta,
                    key,
                    "Warning" if step.warning else "Normal",
                    step.reason or "Progressing",
                    "; ".join(step.messages),
                    now,
                )
            )
        )
    return outcome


def _stalled_reason(status: RLHFRunStatus) -> str | None:
    for cond in status.conditions:
        if cond.type == "Stalled" and cond.status == "True":
            return cond.reason
    return None


def _stalled_without_failing(status: RLHFRunStatus, message: str, now: str, generation: int | None) -> list[Any]:
    conditions = kstatus_conditions(status.phase, "SpecChangeRejected", message, now, generation, status.conditions)
    for cond in conditions:
        if cond.type == "Stalled" and cond.status != "True":
            cond.status, cond.last_transition_time = "True", now
    return conditions


def _set_up(step: _Step) -> None:
    """The run's volume (unless existingClaim), before anything mounts it."""
    pvc = manifests.build_pvc(step.run, step.owner)
    if pvc is not None:
        step.actions.append(Create(PVCS, pvc))


def _advance(step: _Step, plans: list[StagePlan], status: RLHFRunStatus, jobs: Mapping[str, ObservedJob]) -> None:
    by_name = {s.name: s for s in status.stages}
    spec = step.run.spec
    for stage_plan in plans:
        stage = by_name[stage_plan.name]
        if stage_plan.skipped and stage.phase == "Pending":
            stage.phase = "Skipped"
            stage.output_path = stage.merged_path = stage_plan.merged_path
            step.note(
                f"{stage.name}-skipped",
                f"stage {stage.name} skipped (existingOutput {stage_plan.merged_path})",
                "StageSkipped",
            )
        if stage.phase in ("Succeeded", "Skipped"):
            continue
        if stage.phase == "Failed":
            return
        if stage.phase == "Pending":
            step.launch(stage_plan, stage, 1)
            return
        if stage.phase == "Retrying":
            due = parse_time(stage.retry_after)
            if due is not None and due > step.now:
                step.requeue((due - step.now).total_seconds())
                return
            step.launch(stage_plan, stage, stage.attempts + 1, with_config=False)
            return
        # Running or Suspended: follow the job.
        name = stage.job_name or job_name(step.run.metadata.name, stage.name, max(1, stage.attempts))
        job = jobs.get(name)
        if job is None:
            # Not seen (deleted, or created just before a restart and not yet reported):
            # recreate under the same name; 409 means it exists after all.
            step.launch(stage_plan, stage, max(1, stage.attempts))
            step.transitions.pop()
            step.messages.pop()
            return
        if job.state == "Succeeded":
            _stage_succeeded(step, stage, stage_plan, job)
            continue
        if job.state == "Failed":
            _stage_failed(step, stage, stage_plan, job)
            if stage.phase == "Retrying":
                _advance_retry(step, stage, stage_plan)
            return
        _follow_suspend(step, stage, job, spec.suspend)
        if job.state == "Restarting":
            message = f"job {job.name} restarting: {job.message}".rstrip(": ")
            if stage.message != message:
                stage.message = message
                step.note(
                    f"{stage.name}-restart-{stage.attempts}-{job.message}",
                    f"stage {stage.name}: {message}",
                    "StageRestarting",
                    warning=True,
                )
        return


def _advance_retry(step: _Step, stage: StageStatus, stage_plan: StagePlan) -> None:
    due = parse_time(stage.retry_after)
    if due is None or due <= step.now:
        step.launch(stage_plan, stage, stage.attempts + 1, with_config=False)
    else:
        step.requeue((due - step.now).total_seconds())


def _stage_succeeded(step: _Step, stage: StageStatus, stage_plan: StagePlan, job: ObservedJob) -> None:
    result = job.result
    stage.phase = "Succeeded"
    stage.completion_time = rfc3339(step.now)
    stage.retry_after = None
    stage.output_path = result.output_path if result else stage_plan.output_dir
    stage.merged_path = (result.merged_path if result else None) or stage_plan.merged_path
    stage.metrics = dict(result.metrics) if result else {}
    stage.message = None if result else job.result_error
    detail = ", ".join(f"{k}={v:.4g}" for k, v in sorted(stage.metrics.items())[:6])
    step.note(
        f"{stage.name}-succeeded",
        f"stage {stage.name} succeeded" + (f" ({detail})" if detail else ""),
        "StageSucceeded",
    )


def _stage_failed(step: _Step, stage: StageStatus, stage_plan: StagePlan, job: ObservedJob) -> None:
    reason = job.message or "the job failed"
    if stage.attempts <= stage_plan.retries:
        delay = backoff_seconds(stage_plan, stage.attempts)
        stage.phase = "Retrying"
        stage.retry_after = rfc3339(step.now + timedelta(seconds=delay))
        stage.message = f"attempt {stage.attempts} failed: {reason}"
        step.note(
            f"{stage.name}-failed-{stage.attempts}",
            f"stage {stage.name} attempt {stage.attempts} failed ({reason}); retrying in {delay}s",
            "StageRetrying",
            warning=True,
        )
    else:
        stage.phase = "Failed"
        stage.completion_time = rfc3339(step.now)
        stage.message = f"failed after {stage.attempts} attempt(s): {reason}"
        step.note(f"{stage.name}-failed", f"stage {stage.name} {stage.message}", "StageFailed", warning=True)


def _follow_suspend(step: _Step, stage: StageStatus, job: ObservedJob, want_suspended: bool) -> None:
    api = job_api(step.run)
    launcher = step.run.spec.launcher
    if want_suspended:
        if not job.suspended:
            step.actions.append(PatchJob(api, job.name, suspend_patch(launcher, True)))
        if stage.phase != "Suspended":
            stage.phase = "Suspended"
            step.note(f"{stage.name}-suspend-{job.name}", f"stage {stage.name} suspended", "Suspended")
    elif stage.phase == "Suspended":
        # Only undo what spec.suspend did; a Kueue-held job is Kueue's to release.
        if job.suspended:
            step.actions.append(PatchJob(api, job.name, suspend_patch(launcher, False)))
        stage.phase = "Running"
        step.note(f"{stage.name}-resume-{job.name}", f"stage {stage.name} resumed", "Resumed")


def _summarize(step: _Step, status: RLHFRunStatus, generation: int | None, now: str) -> None:
    stages = status.stages
    failed = next((s for s in stages if s.phase == "Failed"), None)
    active = next((s for s in stages if s.phase not in ("Succeeded", "Skipped", "Failed")), None)
    phase: RunPhase
    if failed is not None:
        phase, reason = "Failed", "StageFailed"
        message = f"stage {failed.name} {failed.message or 'failed'}"
    elif active is None:
        phase, reason, message = "Succeeded", "Succeeded", "all stages finished"
    elif active.phase == "Suspended" or (step.run.spec.suspend and active.phase != "Pending"):
        phase, reason, message = "Suspended", "Suspended", f"stage {active.name} suspended"
    elif active.phase == "Retrying":
        phase, reason = "Running", "StageRetrying"
        message = f"stage {active.name} retrying after {active.retry_after}"
    elif active.phase == "Pending":
        phase, reason, message = "Pending", "Pending", "waiting to start"
    else:
        phase, reason = "Running", "StageRunning"
        message = f"stage {active.name} running (job {active.job_name}, attempt {active.attempts})"
    if phase in ("Succeeded", "Failed") and status.phase != phase:
        step.note(f"run-{phase.lower()}", f"run {phase.lower()}", phase, warning=phase == "Failed")
    status.phase = phase
    status.message = message
    current = active or failed or (stages[-1] if stages else None)
    status.current_stage = current.name if current is not None else None
    status.observed_generation = generation
    status.conditions = kstatus_conditions(phase, reason, message, now, generation, status.conditions)
