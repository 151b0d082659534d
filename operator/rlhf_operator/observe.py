"""What the operator sees of a stage job, parsed from its body: pure, no I/O.

PyTorchJob (training operator v1) reports Created / Running / Restarting / Succeeded / Failed
(and Suspended) conditions; TrainJob (Trainer v2) reports Suspended / Complete / Failed. Both are
folded into one JobState so the state machine does not care which launcher ran the stage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError
from rlhf_api.naming import ATTEMPT_LABEL, RUN_LABEL, STAGE_LABEL
from rlhf_api.result import StageResult

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

# Labels the Kubeflow training operator puts on the pods of a PyTorchJob.
JOB_NAME_POD_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_POD_LABEL = "training.kubeflow.org/replica-type"
# Trainer v2 (JobSet) pods: the TrainJob name and the node replicated job.
TRAINJOB_NAME_POD_LABEL = "jobset.sigs.k8s.io/jobset-name"
TRAINJOB_REPLICA_POD_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
TRAINJOB_INDEX_POD_LABEL = "batch.kubernetes.io/job-completion-index"


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
    result: StageResult | None = None
    result_error: str | None = None


def _true_conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    found: dict[str, Mapping[str, Any]] = {}
    for cond in status.get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("status") == "True" and cond.get("type"):
            found[str(cond["type"])] = cond
    return found


def job_state(body: Mapping[str, Any]) -> tuple[JobState, str]:
    """The job's state and the message of the condition that decided it."""
    conditions = _true_conditions(body.get("status") or {})
    # Terminal conditions win; among the others the most specific one.
    for kind, state in (
        ("Succeeded", "Succeeded"),
        ("Complete", "Succeeded"),
        ("Failed", "Failed"),
        ("Suspended", "Suspended"),
        ("Restarting", "Restarting"),
        ("Running", "Running"),
        ("Created", "Created"),
    ):
        if kind in conditions:
            cond = conditions[kind]
            message = str(cond.get("message") or cond.get("reason") or "")
            return state, message  # type: ignore[return-value]
    return "Pending", ""


def job_suspended(body: Mapping[str, Any]) -> bool:
    spec = body.get("spec") or {}
    run_policy = spec.get("runPolicy") or {}
    return bool(run_policy.get("suspend") or spec.get("suspend"))


def observe_job(body: Mapping[str, Any]) -> ObservedJob:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    state, message = job_state(body)
    attempt_text = labels.get(ATTEMPT_LABEL)
    owner_uid = next(
        (ref.get("uid") for ref in meta.get("ownerReferences") or [] if ref.get("controller")),
        None,
    )
    return ObservedJob(
        name=str(meta.get("name")),
        state=state,
        suspended=job_suspended(body),
        message=message,
        stage=labels.get(STAGE_LABEL),
        attempt=int(attempt_text) if attempt_text and attempt_text.isdigit() else None,
        owner_uid=owner_uid,
        run_label=labels.get(RUN_LABEL),
    )


def master_pod_selector(job_name: str, launcher: str) -> dict[str, str]:
    """Labels of the pod whose termination message carries the stage result."""
    if launcher == "trainjob":
        return {
            TRAINJOB_NAME_POD_LABEL: job_name,
            TRAINJOB_REPLICA_POD_LABEL: "node",
            TRAINJOB_INDEX_POD_LABEL: "0",
        }
    return {JOB_NAME_POD_LABEL: job_name, REPLICA_TYPE_POD_LABEL: "master"}


def master_pod_name(job_name: str) -> str:
    """The training operator names replica pods `<job>-<replica type>-<index>`."""
    return f"{job_name}-master-0"


def label_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in labels.items())


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """Client-side selector check (the API filters too; an emulator may not)."""
    return all(labels.get(key) == value for key, value in selector.items())


def termination_message(pod: Mapping[str, Any], container: str | None = None) -> str | None:
    """The terminated container's message (the trainer's compact result JSON)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if container is not None and status.get("name") != container and len(statuses) > 1:
            continue
        for key in ("state", "lastState"):
            terminated = (status.get(key) or {}).get("terminated") or {}
            if terminated.get("message"):
                return str(terminated["message"])
    return None


def parse_result(message: str | None) -> tuple[StageResult | None, str | None]:
    """The StageResult in a termination message, or why there is none."""
    if not message:
        return None, "the master pod has no termination message"
    try:
        return StageResult.model_validate_json(message), None
    except (ValidationError, json.JSONDecodeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return None, f"the master pod's termination message is not a stage result: {first}"


def result_from_pods(
    pods: Sequence[Mapping[str, Any]], job_name: str, launcher: str
) -> tuple[StageResult | None, str | None]:
    selector = master_pod_selector(job_name, launcher)
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if matches(labels, selector):
            container = "pytorch" if launcher == "pytorchjob" else "node"
            return parse_result(termination_message(pod, container))
    return None, "no master pod found"


def failure_message(condition_message: str, result: StageResult | None, pods: Sequence[Mapping[str, Any]]) -> str:
    """Why a job failed: the job condition's message plus the trainer's own words (its failed
    result, or the log tail the kubelet keeps with FallbackToLogsOnError), one line."""
    detail = result.message if result is not None and result.message else None
    if detail is None and pods:
        text = termination_message(pods[0]) or ""
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        detail = lines[-1] if lines else None
    parts = [part for part in (condition_message, (detail or "")[:300]) if part]
    return ": ".join(parts)
