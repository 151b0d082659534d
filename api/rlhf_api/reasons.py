"""Reasons: the CamelCase words in RLHFRun conditions and events, as named constants.

Alert rules, Argo CD health checks and Flux expressions match on these strings, so they are
part of the API: renaming one is a breaking change. docs/gitops.md lists them for those authors.
Each constant says when it appears and whether its event is Normal or Warning.
"""

from __future__ import annotations

from typing import Final

# --- run-level: the reason of the Ready / Reconciling / Stalled conditions ---------------------
PENDING: Final = "Pending"  # nothing started yet (Normal)
STAGE_RUNNING: Final = "StageRunning"  # a stage's job is running (Normal)
SUCCEEDED: Final = "Succeeded"  # every stage finished: Ready=True (Normal)
FAILED: Final = "Failed"  # the run stopped for good: Stalled=True (Warning)
SUSPENDED: Final = "Suspended"  # spec.suspend holds the running stage's job (Normal)
INVALID_SPEC: Final = "InvalidSpec"  # the spec does not validate; fix it and the run carries on (Warning)
SPEC_CHANGE_REJECTED: Final = "SpecChangeRejected"  # an immutable field changed; the change is ignored (Warning)
# a stage's image is outside the operator's allow-list (RLHF_ALLOWED_IMAGES); fixed, the run carries on (Warning)
IMAGE_NOT_ALLOWED: Final = "ImageNotAllowed"
# `rlhf estimate` at creation: a stage needs more GPU memory than its GPU has; it still runs (Warning)
INSUFFICIENT_GPU_MEMORY: Final = "InsufficientGPUMemory"

# --- stage transitions: event reasons (also the run condition's reason while they hold) --------
STAGE_STARTED: Final = "StageStarted"  # a stage's first job was created (Normal)
STAGE_RETRIED: Final = "StageRetried"  # a stage's next attempt (a new job) was created (Normal)
STAGE_SKIPPED: Final = "StageSkipped"  # existingOutput given: the stage is not run (Normal)
STAGE_SUCCEEDED: Final = "StageSucceeded"  # a stage's job succeeded and its result was read (Normal)
STAGE_RETRYING: Final = "StageRetrying"  # an attempt failed; the next starts after the backoff (Warning)
STAGE_FAILED: Final = "StageFailed"  # an attempt failed and no retries are left (Warning)
STAGE_RESTARTING: Final = "StageRestarting"  # the launcher restarts the job's pods in place (Warning)
STAGE_JOB_DELETED: Final = "StageJobDeleted"  # the running stage's job was deleted: a failed attempt (Warning)
STAGE_PREEMPTED: Final = "StagePreempted"  # SIGTERM: checkpointed and resumed at once, not counted (Warning)
STAGE_RESULT_UNREADABLE: Final = "StageResultUnreadable"  # succeeded, but its result could not be read (Warning)
# a job's result carries another identity (another run's, another config's): failed, not retried (Warning)
STAGE_IDENTITY_MISMATCH: Final = "StageIdentityMismatch"
# rlhf run: a spec edit changed the trainer config of a stage that ran; it runs again from the start (Warning)
STAGE_CONFIG_CHANGED: Final = "StageConfigChanged"
# the next attempt waits until no pod of the previous one is left (Normal)
PREVIOUS_ATTEMPT_TERMINATING: Final = "PreviousAttemptTerminating"
# an attempt's pods wait to start (image pull, missing Secret, unschedulable, refused by admission) (Warning)
STAGE_WAITING: Final = "StageWaiting"
# an attempt's pods did not start within startDeadlineSeconds: a failed attempt (Warning)
STAGE_START_TIMEOUT: Final = "StageStartTimeout"
STAGE_QUEUED: Final = "StageQueued"  # the stage's job waits for admission by its Kueue queue (Normal)
STAGE_ADMITTED: Final = "StageAdmitted"  # Kueue admitted (unsuspended) the queued job (Normal)
# no progress event for progressDeadlineSeconds while the job ran: the attempt is ended and retried (Warning)
STAGE_STALLED: Final = "StageStalled"
GUARD_TRIPPED: Final = "GuardTripped"  # a stage's guard (maxKL, minRewardStd, non-finite loss) tripped (Warning)
GUARDS_PASSING: Final = "GuardsPassing"  # Healthy=True again: the latest numbers pass every guard (Normal)
# progress lines the operator could not use (not JSON, too long, too deep, a number beyond int64, a
# skipped burst, a step above its total): said once per job (Warning)
PROGRESS_LINES_DROPPED: Final = "ProgressLinesDropped"
# Run identity and API refusals (docs/architecture.md, "Identity, API errors, finalizers").
STAGE_DIVERGED: Final = "StageDiverged"  # the result's training loss is NaN/Inf: failed, not retried (Warning)
NON_FINITE_METRIC: Final = "NonFiniteMetric"  # a NaN/Inf metric dropped from the status (Warning)
JOB_CONFLICT: Final = "JobConflict"  # a job of the run's name exists that this run does not control (Warning)
CREATE_REFUSED: Final = "CreateRefused"  # the API server refused a write for good (4xx): Stalled (Warning)
RESUMED: Final = "Resumed"  # spec.suspend went back to false (Normal)
PROGRESSING: Final = "Progressing"  # fallback for an event with no specific reason (Normal)

# --- non-kstatus condition types ----------------------------------------------------------------
RESULTS_READ: Final = "ResultsRead"  # condition type: False while some succeeded stage's result is unknown
GPU_MEMORY: Final = "GPUMemory"  # condition type: False when a stage's estimated memory exceeds its GPU
HEALTHY: Final = "Healthy"  # condition type: False while a guard is tripped (Argo CD / Flux: Degraded)

ALL: Final = (
    PENDING,
    STAGE_RUNNING,
    SUCCEEDED,
    FAILED,
    SUSPENDED,
    INVALID_SPEC,
    SPEC_CHANGE_REJECTED,
    IMAGE_NOT_ALLOWED,
    INSUFFICIENT_GPU_MEMORY,
    STAGE_STARTED,
    STAGE_RETRIED,
    STAGE_SKIPPED,
    STAGE_SUCCEEDED,
    STAGE_RETRYING,
    STAGE_FAILED,
    STAGE_RESTARTING,
    STAGE_JOB_DELETED,
    STAGE_PREEMPTED,
    STAGE_RESULT_UNREADABLE,
    STAGE_IDENTITY_MISMATCH,
    PREVIOUS_ATTEMPT_TERMINATING,
    STAGE_CONFIG_CHANGED,
    STAGE_WAITING,
    STAGE_START_TIMEOUT,
    STAGE_QUEUED,
    STAGE_ADMITTED,
    STAGE_STALLED,
    GUARD_TRIPPED,
    GUARDS_PASSING,
    PROGRESS_LINES_DROPPED,
    STAGE_DIVERGED,
    NON_FINITE_METRIC,
    JOB_CONFLICT,
    CREATE_REFUSED,
    RESUMED,
    PROGRESSING,
)
