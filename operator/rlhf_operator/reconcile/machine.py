"""The state machine: (run body, observed jobs, now) -> (actions, new status). Pure.

The same function drives the cluster (the kopf shell in controller/ applies the actions with
the Kubernetes API) and the laptop (`rlhf run`: local/ applies them with subprocesses), so
retries, backoff, suspend, phases, conditions, reasons and events mean the same in both places.
Calling it again with its own output status and the same observations yields no actions and the
same status (idempotence): restarts and repeated watch events are harmless.

Stage phases: Pending -> Running -> Succeeded | Retrying -> Running ... | Failed; Skipped when
the spec gives the stage's output (existingOutput); Suspended while spec.suspend holds the job;
Queued while Kueue holds it (spec.queueName). While a stage runs, its progress lines (read by
the caller) feed its progress, guards and hang deadline (progress.py).
A job that vanishes or is deleted while its stage runs is a failed attempt (retried like any
other); a stage that succeeded is never run again, even when its job is gone later.

Children: the volume on the first pass (unless existingClaim), then per stage, when it starts,
its trainer config and its job (attempt N: a new job per retry, the config is reused). Write
budget of a 3-stage run: PVC 1 + NetworkPolicy 1 + ConfigMaps 3 + jobs 3 + status patches 4 + events 4 +
finalizer releases 3 = 19.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rlhf_api import reasons
from rlhf_api.naming import job_name
from rlhf_api.progress_status import parse_time
from rlhf_api.result import EXIT_CONFIG
from rlhf_api.spec import RLHFRun
from rlhf_api.status import Condition, RLHFRunStatus, RunPhase, StageStatus, condition, kstatus_conditions
from rlhf_api.validation import RunInvalid, parse_run

from ..api_ref import CONFIGMAPS, NETWORK_POLICIES, PVCS
from ..image_policy import refused_images
from ..launchers import Launcher, launcher_for, release_patch
from ..manifests.configmap import build_stage_configmap
from ..manifests.meta import owner_reference
from ..manifests.network_policy import build_network_policy
from ..manifests.pvc import build_pvc, claim_name
from ..observed_job import ObservedJob
from ..plan import StagePlan, plan
from ..render import build_stage_job
from ..settings import OperatorSettings
from . import progress as progress_
from .actions import Action, Create, EndJob, PatchJob, PostEvent, ReleaseJob
from .attempts import RECHECK_SECONDS, wait_message
from .blocked import Blocked, Stall, conflict, refusal
from .events import event_body, rfc3339
from .finite import diverged, split_metrics
from .identity_check import edited_stages, edited_started_stages, foreign_result
from .progress import ProgressReading
from .start_deadline import start_check, waiting_prefix
from .status_store import dump_status, load_status, merge_patch

# Lines for stages that will not fit their GPUs (rlhf_operator.estimate.fit_warnings): a seam,
# as for launchers, so the core does not import the memory model and its catalog.
FitCheck = Callable[[RLHFRun], list[str]]


@dataclass
class Outcome:
    actions: list[Action]
    status: RLHFRunStatus
    old_status: dict[str, Any]
    requeue_after: float | None = None  # seconds until a timed transition (retry backoff)
    transitions: list[str] = field(default_factory=list)
    # Stages whose started config (their ConfigMap) would name what a rejected edit changed: the
    # shell reads them and passes them back (`started_configs`), for the message.
    config_reads: list[str] = field(default_factory=list)

    @property
    def new_status(self) -> dict[str, Any]:
        return dump_status(self.status)

    @property
    def status_patch(self) -> dict[str, Any]:
        """RFC 7386 merge patch from the stored status to the new one ({} = nothing to write)."""
        return merge_patch(self.old_status, self.new_status)  # type: ignore[no-any-return]

    @property
    def writes(self) -> list[Create | PatchJob]:
        """What must be applied before the status patch (children, job patches)."""
        return [a for a in self.actions if isinstance(a, Create | PatchJob)]

    @property
    def events(self) -> list[PostEvent]:
        return [a for a in self.actions if isinstance(a, PostEvent)]

    @property
    def releases(self) -> list[ReleaseJob]:
        """What must be applied after the status patch (the outcome is stored by then)."""
        return [a for a in self.actions if isinstance(a, ReleaseJob)]

    @property
    def ends(self) -> list[EndJob]:
        """Jobs to end after the status patch (a stalled attempt, a guard's stop)."""
        return [a for a in self.actions if isinstance(a, EndJob)]


# The doubling stops here, as the Job controller's pod backoff does (6 minutes): uncapped, retry
# 19 of 20 at 60 s would wait about 182 days. A larger retryBackoffSeconds is the user's own cap.
MAX_RETRY_BACKOFF_SECONDS = 360


def backoff_seconds(plan_: StagePlan, failed_attempt: int) -> int:
    """retryBackoffSeconds * 2**(n-1) after the n-th failed attempt, capped at 360 s (or at
    retryBackoffSeconds when that is larger)."""
    base = plan_.retry_backoff_seconds
    cap = max(base, MAX_RETRY_BACKOFF_SECONDS)
    exponent = min(max(0, failed_attempt - 1), 32)  # 2**32 * 1 s is past any cap
    return int(min(cap, base * 2**exponent))


# Stage phases whose job a pass follows (its outcome is not recorded yet).
FOLLOWED: tuple[str, ...] = ("Running", "Suspended", "Queued")


def jobs_followed(status_raw: Any) -> list[str]:
    """The jobs of the stages that are running, queued or suspended: the ones a pass must see."""
    status = load_status(status_raw)
    return [s.job_name for s in status.stages if s.job_name and s.phase in FOLLOWED]


def results_needed(status_raw: Any, jobs: Mapping[str, ObservedJob]) -> list[str]:
    """Finished jobs whose stage has not taken note yet: their Master pod's termination message
    is the stage result (Succeeded) or the trainer's last words (Failed)."""
    status = load_status(status_raw)
    needed = []
    for stage in status.stages:
        job = jobs.get(stage.job_name or "")
        if job is None or stage.phase not in FOLLOWED:
            continue
        if job.finished:
            needed.append(job.name)
    return needed


# --- one pass ------------------------------------------------------------------------------------


@dataclass
class _Step:
    """Accumulates one reconcile pass: actions, transitions and the most important event."""

    run: RLHFRun
    settings: OperatorSettings
    launcher: Launcher
    now: datetime
    owner: dict[str, Any] | None
    # Pods of a stage's previous attempt still running, by (stage, attempt) (reconcile/attempts.py)
    lingering: Mapping[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)
    progress: Mapping[str, ProgressReading] = field(default_factory=dict)  # by job name
    actions: list[Action] = field(default_factory=list)
    transitions: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    warning: bool = False
    reason: str | None = None
    requeue_after: float | None = None
    blocked: Blocked = field(default_factory=Blocked)
    stalls: list[Stall] = field(default_factory=list)

    def stall(self, stall: Stall) -> None:
        if all(s.key != stall.key for s in self.stalls):
            self.stalls.append(stall)

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
        """The stage's job for `attempt`, preceded by its trainer config (created when the stage
        starts; a retry reuses it). Not when a write was refused or a foreign job holds the name
        (blocked.py): the stage then stays as it is."""
        config = build_stage_configmap(self.run, stage_plan, self.owner)
        job = build_stage_job(
            self.run, stage_plan, attempt, self.owner, self.settings, self.run.spec.suspend, self.launcher
        )
        name = str(job["metadata"]["name"])
        foreign = self.blocked.foreign.get(name)
        if foreign is not None:
            if foreign.deleting:
                self.requeue(2.0)  # released below (_release_recorded); its deletion's event may lag
            else:
                self.stall(conflict(foreign))  # its deletion's watch event brings the next pass
            return
        if with_config:
            if config["metadata"]["name"] in self.blocked.refused:
                return
            self.actions.append(Create(CONFIGMAPS, config))
        if name in self.blocked.refused:
            return
        self.actions.append(Create(self.launcher.api, job))
        stage.phase = "Suspended" if self.run.spec.suspend else "Queued" if self.run.spec.queue_name else "Running"
        stage.job_name = str(job["metadata"]["name"])
        stage.attempts = attempt
        identity = stage_plan.config.identity if stage_plan.config else None
        stage.config_hash = identity.config_hash if identity else None  # what a later spec edit may not change
        stage.retry_after = None
        progress_.new_attempt(stage)
        stage.start_time = stage.start_time or rfc3339(self.now)
        if stage.phase == "Queued":  # created suspended: Kueue admits (unsuspends) it
            stage.message = _queued_message(self.run.spec.queue_name)
        elif attempt == 1:
            stage.message = None
        if attempt == 1:
            self.note(
                f"{stage.name}-start-1", f"stage {stage.name} started (job {stage.job_name})", reasons.STAGE_STARTED
            )
        else:
            self.note(
                f"{stage.name}-start-{attempt}",
                f"stage {stage.name} attempt {attempt} started (job {stage.job_name})",
                reasons.STAGE_RETRIED,
            )


_PARSED: OrderedDict[tuple[str, ...], tuple[RLHFRun, list[StagePlan]]] = OrderedDict()
_PARSED_MAX = 512
_PARSED_META = ("name", "namespace", "uid", "generation", "labels", "annotations")


def _parsed(
    body: Mapping[str, Any], settings: OperatorSettings, mount_root: str | None
) -> tuple[RLHFRun, list[StagePlan]]:
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
            mount_root or "",
        )
    except (TypeError, ValueError):
        key = None  # not JSON (cannot come from the API): no memo
    if key is not None and key in _PARSED:
        _PARSED.move_to_end(key)
        return _PARSED[key]
    run = parse_run(body)
    parsed = run, plan(run, mount_root or run.spec.storage.mount_path, settings.trainer_image)
    if key is not None:
        _PARSED[key] = parsed
        while len(_PARSED) > _PARSED_MAX:
            _PARSED.popitem(last=False)
    return parsed


def _rejected(
    body: Mapping[str, Any],
    status: RLHFRunStatus,
    old_status: dict[str, Any],
    errors: list[str],
    now: datetime,
    key: str,
    reason: str,
    prefix: str = "invalid spec: ",
) -> Outcome:
    """A run that cannot go on as written (invalid spec, a refused image): Failed with the
    errors, and one Warning event per generation."""
    meta = body.get("metadata") or {}
    new = _invalid(body, status, errors, now, reason, prefix)
    outcome = Outcome([], new, old_status)
    if outcome.status_patch:
        event = event_body(meta, f"{key}-{meta.get('generation')}", "Warning", reason, new.message or "", now)
        outcome.actions.append(PostEvent(event))
    return outcome


def _invalid(
    body: Mapping[str, Any],
    status: RLHFRunStatus,
    errors: list[str],
    now: datetime,
    reason: str = reasons.INVALID_SPEC,
    prefix: str = "invalid spec: ",
) -> RLHFRunStatus:
    generation = (body.get("metadata") or {}).get("generation")
    message = prefix + "; ".join(errors)
    status.phase = "Failed"
    status.message = message[:32768]
    status.observed_generation = generation
    status.conditions = kstatus_conditions(
        "Failed", reason, status.message, rfc3339(now), generation, status.conditions
    )
    return status


# Refusals that hold only until the spec (or the operator's settings) is fixed: the run then
# carries on from its stages' state.
_RECOVERABLE = (reasons.INVALID_SPEC, reasons.IMAGE_NOT_ALLOWED)


def _immutable_violation(run: RLHFRun, status: RLHFRunStatus) -> str | None:
    """Spec fields that may not change once the run started (the CRD's CEL rules, checked again)."""
    if status.stages and [s.name for s in status.stages] != list(run.spec.pipeline):
        return f"pipeline: immutable once the run exists (was {[s.name for s in status.stages]})"
    if status.volume_claim and status.volume_claim != claim_name(run):
        return f"storage: immutable once the run exists (the run uses claim {status.volume_claim})"
    return None


def reconcile(
    body: Mapping[str, Any],
    jobs: Mapping[str, ObservedJob],
    now: datetime,
    settings: OperatorSettings,
    launcher: Launcher | None = None,
    mount_root: str | None = None,
    fit_check: FitCheck | None = None,
    lingering: Mapping[tuple[str, int], tuple[str, ...]] | None = None,
    progress: Mapping[str, ProgressReading] | None = None,
    blocked: Blocked | None = None,
    started_configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Outcome:
    """One pass of the state machine over a run; see the module docstring.

    `launcher` defaults to the one spec.launcher names, `mount_root` to spec.storage.mountPath
    (the local backend passes its own launcher and its work directory). `fit_check` (the
    memory estimate, rlhf_operator.estimate.fit_warnings) runs on a run's first pass; None skips it.
    `lingering`: pods of a retrying stage's previous attempt still running (none known: start it).
    `progress`: the progress events read since the last pass, by job name (reconcile/progress.py).
    `blocked`: foreign jobs and refused writes the shell found (blocked.py).
    `started_configs`: the config file each started stage's ConfigMap holds, by stage, when the
    last pass asked for them (Outcome.config_reads): a rejected edit then names its fields.
    """
    meta = body.get("metadata") or {}
    generation = meta.get("generation")
    old_raw = body.get("status") if isinstance(body.get("status"), Mapping) else {}
    # No stored status yet: everything is new, defaults included (a queued run's first phase,
    # Pending, is the default and would otherwise never be written).
    old_status = dump_status(load_status(old_raw)) if old_raw else {}
    status = load_status(old_raw)

    try:
        run, plans = _parsed(body, settings, mount_root)
    except RunInvalid as error:
        return _rejected(body, status, old_status, error.errors, now, "invalid", reasons.INVALID_SPEC)

    refused = refused_images(run.spec, plans, settings.allowed_images) if status.phase != "Succeeded" else []
    if refused:
        return _rejected(body, status, old_status, refused, now, "image", reasons.IMAGE_NOT_ALLOWED, prefix="")

    if status.phase == "Failed" and _stalled_reason(status) in _RECOVERABLE:
        # The spec was fixed: carry on from the stages' state.
        status.phase = "Running" if any(s.phase != "Pending" for s in status.stages) else "Pending"
        status.message = None

    step = _Step(
        run,
        settings,
        launcher or launcher_for(run),
        now,
        owner_reference(body),
        lingering or {},
        dict(progress or {}),
        blocked=blocked or Blocked(),
    )

    violation = _immutable_violation(run, status) or edited_started_stages(plans, status, started_configs)
    if violation is not None:
        status.message = violation
        status.observed_generation = generation
        status.conditions = _stalled_without_failing(status, violation, rfc3339(now), generation)
        outcome = Outcome([], status, old_status)
        if started_configs is None and _immutable_violation(run, status) is None:
            outcome.config_reads = [p.name for p in edited_stages(plans, status)]
        if outcome.status_patch:
            outcome.actions.append(
                PostEvent(
                    event_body(meta, f"immutable-{generation}", "Warning", reasons.SPEC_CHANGE_REJECTED, violation, now)
                )
            )
        return outcome

    if not status.stages:  # the run's first pass
        status.stages = [StageStatus(name=p.name) for p in plans]
        if fit_check is not None:
            _warn_if_over_gpu_memory(step, status, meta, fit_check)

    if status.phase not in ("Succeeded", "Failed"):
        if status.volume_claim is None:
            pvc = build_pvc(run, step.owner)
            if pvc is not None and pvc["metadata"]["name"] not in step.blocked.refused:
                step.actions.append(Create(PVCS, pvc))
            if settings.stage_network_policy:
                step.actions.append(Create(NETWORK_POLICIES, build_network_policy(run, step.owner)))
            if pvc is None or pvc["metadata"]["name"] not in step.blocked.refused:
                status.volume_claim = claim_name(run)
        if status.volume_claim is not None:  # no job mounts a claim the server refused
            _advance(step, plans, status, jobs)
    _release_recorded(step, status, jobs)
    _end_abandoned(step, status, jobs)
    for name, message in step.blocked.refused.items():
        step.stall(refusal(name, message))

    _summarize(step, status, generation, rfc3339(now))

    outcome = Outcome(step.actions, status, old_status, step.requeue_after, step.transitions)
    if step.transitions and outcome.status_patch:
        key = ",".join(step.transitions)
        outcome.actions.append(
            PostEvent(
                event_body(
                    meta,
                    key,
                    "Warning" if step.warning else "Normal",
                    step.reason or reasons.PROGRESSING,
                    "; ".join(step.messages),
                    now,
                )
            )
        )
    return outcome


def _warn_if_over_gpu_memory(step: _Step, status: RLHFRunStatus, meta: Mapping[str, Any], fit_check: FitCheck) -> None:
    """`rlhf estimate` when a run is created: a Warning event and GPUMemory=False for stages that
    will not fit their GPUs. Never blocks: estimates are estimates."""
    over = fit_check(step.run)
    if not over:
        return
    message, reason = "; ".join(over), reasons.INSUFFICIENT_GPU_MEMORY
    step.actions.append(PostEvent(event_body(meta, "gpu-memory", "Warning", reason, message, step.now)))
    gpu = condition(reasons.GPU_MEMORY, False, reason, message[:32768], rfc3339(step.now), meta.get("generation"))
    status.conditions.append(gpu)


def _stalled_reason(status: RLHFRunStatus) -> str | None:
    for cond in status.conditions:
        if cond.type == "Stalled" and cond.status == "True":
            return cond.reason
    return None


def _stalled_without_failing(status: RLHFRunStatus, message: str, now: str, generation: int | None) -> list[Any]:
    conditions = kstatus_conditions(
        status.phase, reasons.SPEC_CHANGE_REJECTED, message, now, generation, status.conditions
    )
    for cond in conditions:
        if cond.type == "Stalled" and cond.status != "True":
            cond.status, cond.last_transition_time = "True", now
    return conditions


def _advance(step: _Step, plans: list[StagePlan], status: RLHFRunStatus, jobs: Mapping[str, ObservedJob]) -> None:
    by_name = {s.name: s for s in status.stages}
    for stage_plan in plans:
        stage = by_name[stage_plan.name]
        if stage_plan.skipped and stage.phase == "Pending":
            stage.phase = "Skipped"
            stage.output_path = stage.merged_path = stage_plan.merged_path
            step.note(
                f"{stage.name}-skipped",
                f"stage {stage.name} skipped (existingOutput {stage_plan.merged_path})",
                reasons.STAGE_SKIPPED,
            )
        if stage.phase in ("Succeeded", "Skipped"):
            continue  # never run again, whatever happens to its job later
        if stage.phase == "Failed":
            return
        if stage.phase == "Pending":
            step.launch(stage_plan, stage, 1)
            return
        if stage.phase == "Retrying":
            _advance_retry(step, stage, stage_plan)
            return
        # Running or Suspended: follow the job.
        name = stage.job_name or job_name(step.run.metadata.name, stage.name, max(1, stage.attempts))
        job = jobs.get(name)
        if job is None or (job.deleting and not job.finished):
            # Gone, or deleted while it ran (the finalizer keeps it until now): a failed attempt.
            why = "was deleted" if job is not None else "is gone (deleted)"
            _stage_failed(step, stage, stage_plan, f"job {name} {why}", reasons.STAGE_JOB_DELETED)
            if stage.phase == "Retrying":
                _advance_retry(step, stage, stage_plan)
            return
        foreign = foreign_result(job.result, stage_plan) if job.finished else None
        if foreign is not None:
            _stage_foreign(step, stage, f"job {job.name}: {foreign}")
            return
        if job.state == "Succeeded" and job.result is not None and job.result.status == "failed":
            # The pod exited 0 (a wrapper that swallowed the trainer's exit code, a torchrun
            # agent) but the trainer says it failed: its own word wins, a failed attempt.
            why = f"job {job.name} succeeded, but its result says the stage failed"
            why += f": {job.result.message}" if job.result.message else ""
            retry = job.result.exit_code != EXIT_CONFIG
            reason = reasons.STAGE_RETRYING if retry else reasons.STAGE_FAILED
            _stage_failed(step, stage, stage_plan, why, reason, retry)
            if stage.phase == "Retrying":
                _advance_retry(step, stage, stage_plan)
            return
        if job.state == "Succeeded":
            _stage_succeeded(step, stage, stage_plan, job)
            if stage.phase != "Succeeded":
                return  # diverged (finite.py)
            continue
        if job.state == "Failed":
            result = job.result
            why = job.message or "the job failed"
            if result is not None and result.preempted:
                _stage_preempted(step, stage, why)
            elif result is not None and result.exit_code == EXIT_CONFIG:
                why = f"{why} (a configuration error: not retried)"
                _stage_failed(step, stage, stage_plan, why, reasons.STAGE_FAILED, retry=False)
            else:
                _stage_failed(step, stage, stage_plan, why, reasons.STAGE_RETRYING)
            if stage.phase == "Retrying":
                _advance_retry(step, stage, stage_plan)
            return
        if _check_start(step, stage, stage_plan, job):
            return
        _follow_suspend(step, stage, job, step.run.spec.suspend)
        if job.state == "Restarting":
            message = f"job {job.name} restarting: {job.message}".rstrip(": ")
            if stage.message != message:
                stage.message = message
                step.note(
                    f"{stage.name}-restart-{stage.attempts}-{job.message}",
                    f"stage {stage.name}: {message}",
                    reasons.STAGE_RESTARTING,
                    warning=True,
                )
        if stage.phase == "Running":
            _follow_progress(step, status, stage, stage_plan, job)
        return


def _check_start(step: _Step, stage: StageStatus, stage_plan: StagePlan, job: ObservedJob) -> bool:
    """An attempt whose pods have not started: show why (the stage's message, a Warning event
    once per reason and attempt), look again soon, and past startDeadlineSeconds stop the job
    (suspend: its controller deletes its pods and stops creating them) and fail the attempt.
    True when the attempt failed here."""
    check = start_check(job, stage_plan.start_deadline_seconds, step.now, step.settings.pod_start_check_seconds)
    prefix = waiting_prefix(stage.attempts)
    if check.started or stage.phase != "Running":
        if stage.message and stage.message.startswith(prefix):
            stage.message = None  # started after all: the wait is over
        return False
    if check.waiting is not None:
        message = prefix + check.waiting.message
        if stage.message != message:
            stage.message = message
            step.note(
                f"{stage.name}-waiting-{stage.attempts}-{check.waiting.reason}",
                f"stage {stage.name} {message}",
                reasons.STAGE_WAITING,
                warning=True,
            )
    elif stage.message and stage.message.startswith(prefix):
        stage.message = None  # the problem went away (e.g. the Secret was created): starting normally
    if check.overdue:
        why = f"its pods did not start within startDeadlineSeconds ({stage_plan.start_deadline_seconds}s)"
        if check.waiting is not None:
            why += f": {check.waiting.message}"
        step.actions.append(PatchJob(step.launcher.api, job.name, step.launcher.suspend_patch(True)))
        _stage_failed(step, stage, stage_plan, why, reasons.STAGE_START_TIMEOUT)
        if stage.phase == "Retrying":
            _advance_retry(step, stage, stage_plan)
        return True
    if check.recheck_after is not None:
        step.requeue(check.recheck_after)
    return False


def _follow_progress(
    step: _Step, status: RLHFRunStatus, stage: StageStatus, stage_plan: StagePlan, job: ObservedJob
) -> None:
    """Progress, guards and the hang deadline (reconcile/progress.py); an attempt they end is a
    failed one, its job ended after the status patch."""
    section = step.run.spec.section(stage.name)
    generation = step.run.metadata.generation
    reading = step.progress.get(job.name)
    if reading is not None and reading.dropped:
        # Said once per job: the reader gives them once, and the event's name is per job (a
        # repeat after a restart is a 409). An action of its own: it may come with no status change.
        meta = step.run.metadata.model_dump(include={"name", "namespace", "uid"})
        message = f"stage {stage.name} (job {job.name}): dropped from its progress: " + "; ".join(reading.dropped)
        key = f"{job.name}-progress-dropped"
        body = event_body(meta, key, "Warning", reasons.PROGRESS_LINES_DROPPED, message, step.now)
        step.actions.append(PostEvent(body))
    verdict = progress_.follow(status, stage, job, reading, section, step.now, generation, step.note)
    if verdict is None:
        return
    step.actions.append(EndJob(step.launcher.api, job.name, hung=verdict.reason == reasons.STAGE_STALLED))
    _stage_failed(step, stage, stage_plan, verdict.why, verdict.reason, retry=verdict.retry)
    if stage.phase == "Retrying":
        _advance_retry(step, stage, stage_plan)


def _queued_message(queue: str | None) -> str:
    return f"waiting for admission by Kueue queue {queue}"


def _advance_retry(step: _Step, stage: StageStatus, stage_plan: StagePlan) -> None:
    due = parse_time(stage.retry_after)
    if due is None or due <= step.now:
        left = step.lingering.get((stage.name, stage.attempts), ())
        if left:  # as a Job's podReplacementPolicy: Failed
            message = wait_message(stage.name, stage.attempts, left)
            if stage.message != message:
                stage.message = message
                key, reason = f"{stage.name}-wait-{stage.attempts}", reasons.PREVIOUS_ATTEMPT_TERMINATING
                step.note(key, f"stage {stage.name}: {message}", reason)
            step.requeue(RECHECK_SECONDS)
            return
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
    finite, non_finite = split_metrics(result.metrics if result else {})
    stage.metrics = finite
    stage.resumed_from_step = result.resumed_from_step if result else None
    if diverged(non_finite):
        stage.phase = "Running"  # _stage_failed takes it from here, without a retry
        stage.completion_time = None
        losses = diverged(non_finite)
        why = f"training diverged ({', '.join(losses)} not finite): not retried, change the config"
        _stage_failed(step, stage, stage_plan, why, reasons.STAGE_DIVERGED, retry=False)
        return
    if non_finite:
        dropped = ", ".join(non_finite)
        step.note(
            f"{stage.name}-non-finite",
            f"stage {stage.name}: non-finite metric(s) {dropped} dropped from the status",
            reasons.NON_FINITE_METRIC,
            warning=True,
        )
    if result is not None and job.result_error:
        # Fields of the result that could not be stored (an integer beyond int64, a metric beyond
        # a float): dropped, and said; the stage's outcome stands.
        step.note(
            f"{stage.name}-result-dropped",
            f"stage {stage.name}: its result's {job.result_error}",
            reasons.STAGE_RESULT_UNREADABLE,
            warning=True,
        )
    progress_.finished(stage, result.steps if result else None, result.planned_steps if result else None)
    if result is None:
        # The job says it succeeded but its result is unreadable (e.g. the Master pod is gone):
        # not run again; the next stage's handover check verifies the output on the volume.
        stage.result_unknown = True
        stage.message = f"result unreadable: {job.result_error or 'no result'}"
        step.note(
            f"{stage.name}-succeeded",
            f"stage {stage.name} succeeded, but its {stage.message}",
            reasons.STAGE_RESULT_UNREADABLE,
            warning=True,
        )
        return
    stage.message = None
    detail = ", ".join(f"{k}={v:.4g}" for k, v in sorted(stage.metrics.items())[:6])
    step.note(
        f"{stage.name}-succeeded",
        f"stage {stage.name} succeeded" + (f" ({detail})" if detail else ""),
        reasons.STAGE_SUCCEEDED,
    )


def _stage_foreign(step: _Step, stage: StageStatus, why: str) -> None:
    """The job ran another identity's config (or reported another's result): nothing of it is
    this stage's, and a retry would run the same config, so the stage fails."""
    stage.phase = "Failed"
    stage.completion_time = rfc3339(step.now)
    stage.retry_after = None
    stage.message = f"attempt {stage.attempts}: {why}"
    step.note(
        f"{stage.name}-foreign-{stage.attempts}",
        f"stage {stage.name} failed: {stage.message}",
        reasons.STAGE_IDENTITY_MISMATCH,
        warning=True,
    )


def _whole_second_after(moment: datetime) -> datetime:
    """The status keeps whole seconds: round up, so a backoff is never shortened."""
    return moment + timedelta(microseconds=1_000_000 - moment.microsecond) if moment.microsecond else moment


def _stage_preempted(step: _Step, stage: StageStatus, why: str) -> None:
    """SIGTERM (drain, spot reclaim, Kueue preemption): the trainer checkpointed the step it was
    at. Not the stage's fault: retried at once, not counted against `retries`."""
    stage.preemptions = (stage.preemptions or 0) + 1
    stage.phase = "Retrying"
    stage.retry_after = None
    stage.message = f"attempt {stage.attempts} preempted: {why}"
    step.note(
        f"{stage.name}-preempted-{stage.attempts}",
        f"stage {stage.name} attempt {stage.attempts} preempted ({why}); resuming",
        reasons.STAGE_PREEMPTED,
        warning=True,
    )


def _stage_failed(
    step: _Step, stage: StageStatus, stage_plan: StagePlan, why: str, reason: str, retry: bool = True
) -> None:
    """A failed attempt: retried after the backoff while retries are left, else the stage fails.
    Preempted attempts do not count against `retries`."""
    if retry and stage.attempts - (stage.preemptions or 0) <= stage_plan.retries:
        delay = backoff_seconds(stage_plan, stage.attempts)
        stage.phase = "Retrying"
        stage.retry_after = rfc3339(_whole_second_after(step.now + timedelta(seconds=delay)))
        stage.message = f"attempt {stage.attempts} failed: {why}"
        step.note(
            f"{stage.name}-failed-{stage.attempts}",
            f"stage {stage.name} attempt {stage.attempts} failed ({why}); retrying in {delay}s",
            reason,
            warning=True,
        )
    else:
        stage.phase = "Failed"
        stage.completion_time = rfc3339(step.now)
        stage.message = f"failed after {stage.attempts} attempt(s): {why}"
        step.note(f"{stage.name}-failed", f"stage {stage.name} {stage.message}", reasons.STAGE_FAILED, warning=True)


def _follow_suspend(step: _Step, stage: StageStatus, job: ObservedJob, want_suspended: bool) -> None:
    launcher = step.launcher
    if want_suspended:
        if not job.suspended:
            step.actions.append(PatchJob(launcher.api, job.name, launcher.suspend_patch(True)))
        if stage.phase != "Suspended":
            stage.phase = "Suspended"
            step.note(f"{stage.name}-suspend-{job.name}", f"stage {stage.name} suspended", reasons.SUSPENDED)
    elif stage.phase == "Suspended":
        # Only undo what spec.suspend did. A queued run's job is Kueue's to unsuspend: it does
        # so when it admits the workload again, and only then.
        queue = step.run.spec.queue_name
        if job.suspended and not queue:
            step.actions.append(PatchJob(launcher.api, job.name, launcher.suspend_patch(False)))
        queued = bool(queue and job.suspended)
        stage.phase = "Queued" if queued else "Running"
        stage.message = _queued_message(queue) if queued else stage.message
        step.note(f"{stage.name}-resume-{job.name}", f"stage {stage.name} resumed", reasons.RESUMED)
    elif step.run.spec.queue_name and job.suspended and not job.finished:
        # Kueue holds the job (not admitted yet, or preempted and waiting again).
        if stage.phase != "Queued":
            stage.phase, stage.message = "Queued", _queued_message(step.run.spec.queue_name)
            step.note(
                f"{stage.name}-queued-{job.name}-{job.resource_version}",
                f"stage {stage.name} queued: {stage.message}",
                reasons.STAGE_QUEUED,
            )
    elif stage.phase == "Queued" and job.state != "Pending":
        # Unsuspended and picked up by the training operator (a job just created, not yet seen
        # by the watch, also reads as not suspended: that is no admission).
        stage.phase, stage.message = "Running", None
        step.note(
            f"{stage.name}-admitted-{job.name}-{job.resource_version}",
            f"stage {stage.name} admitted by Kueue queue {step.run.spec.queue_name}",
            reasons.STAGE_ADMITTED,
        )


def _release_recorded(step: _Step, status: RLHFRunStatus, jobs: Mapping[str, ObservedJob]) -> None:
    """Release the jobs no stage follows any more, deleted or not: their outcome is in `status`
    (the finalizer only guards the outcome; kept for the job's life it would hold up a namespace
    deletion with the operator gone). And foreign jobs being deleted: their run is gone
    (blocked.py), nobody else would release them."""
    followed = {s.job_name for s in status.stages if s.phase in FOLLOWED}
    for job in jobs.values():
        if job.held and job.name not in followed:
            step.actions.append(ReleaseJob(step.launcher.api, job.name, release_patch(job)))
    for job in step.blocked.foreign.values():
        if job.deleting and job.held:
            step.actions.append(ReleaseJob(step.launcher.api, job.name, release_patch(job)))


def _end_abandoned(step: _Step, status: RLHFRunStatus, jobs: Mapping[str, ObservedJob]) -> None:
    """A stage that ended its attempt (stalled, stopped by a guard) while the job still runs:
    end it (again, if the operator stopped between the status patch and the delete)."""
    planned = {a.name for a in step.actions if isinstance(a, EndJob)}
    for stage in status.stages:
        job = jobs.get(stage.job_name or "")
        if job is None or job.finished or job.deleting or job.name in planned:
            continue
        if stage.phase in ("Retrying", "Failed"):
            step.actions.append(EndJob(step.launcher.api, job.name))


def _results_condition(status: RLHFRunStatus, now: str, generation: int | None) -> Condition | None:
    unknown = [s.name for s in status.stages if s.result_unknown]
    if not unknown and not any(c.type == reasons.RESULTS_READ for c in status.conditions):
        return None
    if unknown:
        message = f"result of stage(s) {', '.join(unknown)} could not be read; see each stage's message"
        reason = reasons.STAGE_RESULT_UNREADABLE
    else:
        message, reason = "every finished stage's result was read", reasons.SUCCEEDED
    return condition(reasons.RESULTS_READ, not unknown, reason, message, now, generation, status.conditions)


def _summarize(step: _Step, status: RLHFRunStatus, generation: int | None, now: str) -> None:
    stages = status.stages
    failed = next((s for s in stages if s.phase == "Failed"), None)
    active = next((s for s in stages if s.phase not in ("Succeeded", "Skipped", "Failed")), None)
    phase: RunPhase
    if failed is not None:
        phase, reason = "Failed", reasons.STAGE_FAILED
        message = f"stage {failed.name} {failed.message or 'failed'}"
    elif active is None:
        phase, reason, message = "Succeeded", reasons.SUCCEEDED, "all stages finished"
    elif active.phase == "Suspended" or (step.run.spec.suspend and active.phase != "Pending"):
        phase, reason, message = "Suspended", reasons.SUSPENDED, f"stage {active.name} suspended"
    elif active.phase == "Queued":
        phase, reason = "Pending", reasons.STAGE_QUEUED
        message = f"stage {active.name} queued: {active.message or _queued_message(step.run.spec.queue_name)}"
    elif active.phase == "Retrying":
        phase, reason = "Running", reasons.STAGE_RETRYING
        message = f"stage {active.name} retrying after {active.retry_after}"
    elif active.phase == "Pending":
        phase, reason, message = "Pending", reasons.PENDING, "waiting to start"
    elif active.message and active.message.startswith(waiting_prefix(active.attempts)):
        phase, reason = "Running", reasons.STAGE_WAITING
        message = f"stage {active.name} (job {active.job_name}) {active.message}"
    else:
        phase, reason = "Running", reasons.STAGE_RUNNING
        message = f"stage {active.name} running (job {active.job_name}, attempt {active.attempts})"
    if phase in ("Succeeded", "Failed") and status.phase != phase:
        step.note(
            f"run-{phase.lower()}",
            f"run {phase.lower()}",
            reasons.SUCCEEDED if phase == "Succeeded" else reasons.FAILED,
            warning=phase == "Failed",
        )
    status.phase = phase
    status.message = message
    current = active or failed or (stages[-1] if stages else None)
    status.current_stage = current.name if current is not None else None
    progress_.summarize(status, generation)
    status.observed_generation = generation
    conditions = kstatus_conditions(phase, reason, message, now, generation, status.conditions)
    results = _results_condition(status, now, generation)
    derived = {c.type for c in conditions} | {reasons.RESULTS_READ}
    # Conditions set elsewhere (GPUMemory, once at creation) are kept as they are.
    kept = [c for c in status.conditions if c.type not in derived]
    previous = status.conditions
    status.conditions = [*conditions, *([results] if results is not None else []), *kept]
    if step.stalls and phase != "Failed":
        _show_stalls(step, status, generation, now, previous)


def _show_stalls(
    step: _Step, status: RLHFRunStatus, generation: int | None, now: str, previous: list[Condition]
) -> None:
    """Stalled=True with the first stall's reason and message (the rest in the message), one
    Warning per distinct stall; the run's message says it too (`rlhf status` shows it)."""
    first = step.stalls[0]
    message = "; ".join(s.message for s in step.stalls)[:32768]
    for stall in step.stalls:
        step.note(stall.key, stall.message, stall.reason, warning=True)
    status.message = message
    status.conditions = [
        condition("Stalled", True, first.reason, message, now, generation, previous) if c.type == "Stalled" else c
        for c in status.conditions
    ]
