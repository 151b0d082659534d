"""RLHFRun status: what the operator writes and `rlhf run` mirrors in report.json.

kstatus-compatible: `observedGeneration` plus Ready / Reconciling / Stalled conditions in
metav1.Condition form, so Argo CD, Flux and `kubectl wait` can read it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, FiniteFloat

from .camel_model import CamelModel
from .stages import StageName

RunPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]
StagePhase = Literal["Pending", "Queued", "Running", "Retrying", "Succeeded", "Failed", "Skipped", "Suspended"]
ConditionType = Literal["Ready", "Reconciling", "Stalled", "ResultsRead", "GPUMemory", "Healthy"]


class Condition(CamelModel):
    """metav1.Condition."""

    type: ConditionType = Field(
        description=(
            "Ready, Reconciling or Stalled (kstatus); ResultsRead (False while a succeeded stage's "
            "result could not be read); GPUMemory (False when a stage is estimated not to fit its GPUs); "
            "Healthy (False while a stage's guard is tripped, e.g. KL above maxKL; Argo CD and Flux read it "
            "as Degraded)."
        )
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase machine-readable reason.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable detail.")
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, ge=0, description="Generation this condition is about.")


class StageProgress(CamelModel):
    """Where a running stage is, from the trainer's progress events (the Master pod's log on a
    cluster, the process's output for `rlhf run`). Kept after the stage ends: its last position."""

    step: int = Field(default=0, ge=0, description="The last training step reported.")
    total_steps: int | None = Field(default=None, ge=1, description="The stage's total steps, when known.")
    percent: float | None = Field(default=None, ge=0, le=100, description="step / totalSteps, in percent.")
    steps_per_second: float | None = Field(
        default=None, ge=0, description="Training speed over the recent events of this attempt."
    )
    estimated_completion_time: str | None = Field(
        default=None, description="When the stage should finish at that speed (RFC 3339)."
    )
    last_progress_time: str | None = Field(
        default=None,
        description=(
            "When the current attempt's last progress event was printed (RFC 3339; unset until a new attempt "
            "reports); the hang deadline runs from it."
        ),
    )
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="The stage's latest headline numbers (loss, reward_mean, kl, accuracy...), finite values only.",
    )


class StageStatus(CamelModel):
    name: StageName = Field(description="Stage name.")
    phase: StagePhase = Field(
        default="Pending",
        description="The stage's phase; Queued: its job waits for admission by Kueue (the queue is in message).",
    )
    job_name: str | None = Field(default=None, description="The stage's PyTorchJob/TrainJob.")
    attempts: int = Field(default=0, ge=0, description="Jobs started for this stage (1 + retries used).")
    preemptions: int | None = Field(
        default=None, ge=0, description="Attempts stopped by SIGTERM (not counted against retries)."
    )
    start_time: str | None = Field(default=None, description="When the first attempt started (RFC 3339).")
    completion_time: str | None = Field(default=None, description="When the stage finished (RFC 3339).")
    retry_after: str | None = Field(default=None, description="Retrying: the next attempt starts after this time.")
    output_path: str | None = Field(default=None, description="The stage's output directory on the volume.")
    merged_path: str | None = Field(default=None, description="The stage's merged model on the volume.")
    # Finite only: a real API server refuses a body with NaN/Infinity (the operator drops those).
    metrics: dict[str, FiniteFloat] = Field(
        default_factory=dict, description="Final metrics from the stage's result (finite numbers only)."
    )
    resumed_from_step: int | None = Field(
        default=None, ge=0, description="The checkpoint step the last attempt resumed from (unset: it started fresh)."
    )
    message: str | None = Field(
        default=None, description="Why the stage failed or was retried; the Kueue queue while Queued."
    )
    progress: StageProgress | None = Field(
        default=None, description="Progress of the stage's current (or last) attempt, from its progress events."
    )
    running_since: str | None = Field(
        default=None,
        description=(
            "With progressDeadlineSeconds: when the current attempt's job was first seen running (RFC 3339); "
            "the startup allowance of the hang deadline runs from it."
        ),
    )
    config_hash: str | None = Field(
        default=None,
        max_length=64,
        description=(
            "The hash of the trainer config the stage's jobs run (its identity, with the run's uid), set when "
            "the stage starts: a spec edit that changes it afterwards is rejected."
        ),
    )
    result_unknown: bool | None = Field(
        default=None,
        description=(
            "True: succeeded, but its result (metrics, merged path) could not be read; the next stage's "
            "handover check verifies its output on the volume."
        ),
    )


class RLHFRunStatus(CamelModel):
    phase: RunPhase = Field(default="Pending", description="Pending, Running, Succeeded, Failed or Suspended.")
    current_stage: str | None = Field(default=None, description="The stage running now (or last run).")
    progress: str | None = Field(default=None, description='Finished stages of all, e.g. "1/3 stages".')
    stage_progress: str | None = Field(
        default=None, description='The current stage\'s percent done, e.g. "45%" (a printer column).'
    )
    eta: str | None = Field(
        default=None,
        description=(
            'The current stage\'s time left when last estimated, e.g. "12m" (a printer column; the exact time is '
            "the stage's progress.estimatedCompletionTime)."
        ),
    )
    stages: list[StageStatus] = Field(default_factory=list, description="One entry per pipeline stage.")
    conditions: list[Condition] = Field(default_factory=list, description="kstatus conditions.")
    observed_generation: int | None = Field(default=None, ge=0, description="The spec generation last acted on.")
    message: str | None = Field(default=None, description="A one-line summary, or why the run failed.")
    volume_claim: str | None = Field(default=None, description="The PVC holding the run's outputs.")


def condition(
    type_: ConditionType,
    status: bool,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
    previous: list[Condition] | None = None,
) -> Condition:
    """A condition whose lastTransitionTime moves only when its status flips (metav1 semantics)."""
    value: Literal["True", "False"] = "True" if status else "False"
    since = now
    for old in previous or []:
        if old.type == type_ and old.status == value:
            since = old.last_transition_time
    return Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def kstatus_conditions(
    phase: RunPhase,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
    previous: list[Condition] | None = None,
) -> list[Condition]:
    """Ready / Reconciling / Stalled for a run phase, as kstatus reads them.

    Reconciling is True while work is under way (also when Suspended: not done, not broken),
    Stalled only on a permanent failure, Ready only when every stage succeeded.
    """
    done, failed = phase == "Succeeded", phase == "Failed"
    return [
        condition("Ready", done, reason, message, now, generation, previous),
        condition("Reconciling", not (done or failed), reason, message, now, generation, previous),
        condition("Stalled", failed, reason, message, now, generation, previous),
    ]
