"""The reconcile core: one pure state machine for the cluster and the laptop.

machine (the state machine), actions (what a pass asks for), events (Event bodies),
status_store (lenient status reading, minimal merge patches), start_deadline (attempts whose
pods have not started).
"""

from __future__ import annotations

from rlhf_api.progress_status import parse_time

from .actions import Action, Create, EndJob, PatchJob, PostEvent, ReleaseJob
from .events import event_body, rfc3339
from .machine import Outcome, backoff_seconds, jobs_followed, reconcile, results_needed
from .progress import ProgressReading, running_jobs
from .start_deadline import jobs_to_inspect
from .status_store import dump_status, load_status, merge_patch

__all__ = [
    "Action",
    "Create",
    "EndJob",
    "Outcome",
    "PatchJob",
    "PostEvent",
    "ProgressReading",
    "ReleaseJob",
    "backoff_seconds",
    "dump_status",
    "event_body",
    "jobs_followed",
    "jobs_to_inspect",
    "load_status",
    "merge_patch",
    "parse_time",
    "reconcile",
    "results_needed",
    "rfc3339",
    "running_jobs",
]
