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

ALL: Final = (
    PENDING,
    STAGE_RUNNING,
    SUCCEEDED,
    FAILED,
    SUSPENDED,
    INVALID_SPEC,
    SPEC_CHANGE_REJECTED,
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
    STAGE_DIVERGED,
    NON_FINITE_METRIC,
    JOB_CONFLICT,
    CREATE_REFUSED,
    RESUMED,
    PROGRESSING,
)
