"""Why is this attempt waiting? A stage job's pods (and, with no pods, its events), read. Pure.

A job whose pods cannot start does not fail by itself: the kubelet retries an image pull or a
missing Secret for ever, an unschedulable pod waits for a node that may never come, and a pod
refused by admission (Pod Security, a quota) is simply never created, with the job controller
retrying. This module says which of these holds, as one reason and one line, so that the
reconcile can show it (the stage's message, the run's Reconciling condition, a Warning event)
and fail the attempt after the stage's startDeadlineSeconds.

Normal waiting (ContainerCreating, PodInitializing, a pod not yet scheduled without a verdict)
is not a reason: only states that need someone to act are reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Container waiting reasons that do not resolve by themselves (kubelet: images.go, kuberuntime).
CONTAINER_PROBLEMS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",  # a missing Secret or ConfigMap (key), e.g. spec.secrets.hfToken
        "CreateContainerError",
        "RunContainerError",
    }
)
UNSCHEDULABLE = "Unschedulable"
POD_SECURITY = "PodSecurity"
# Events of a controller that could not create a pod: the Kubeflow training operator
# (FailedCreatePod, on the PyTorchJob) and the Job controller under a TrainJob (FailedCreate).
CREATE_FAILED_EVENTS = frozenset({"FailedCreate", "FailedCreatePod"})
_MESSAGE_MAX = 300


@dataclass(frozen=True)
class Waiting:
    """Why an attempt's pods do not start: a CamelCase reason and one line of detail."""

    reason: str
    message: str


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _MESSAGE_MAX else line[: _MESSAGE_MAX - 3] + "..."


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "?")


def pod_waiting(pod: Mapping[str, Any]) -> Waiting | None:
    """A pending pod's problem: a container that cannot be created or pulled, else the
    scheduler's Unschedulable verdict; None for a pod that runs, ran, or is merely starting."""
    status = pod.get("status") or {}
    if status.get("phase", "Pending") != "Pending":
        return None
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = str(waiting.get("reason") or "")
            if reason in CONTAINER_PROBLEMS:
                detail = waiting.get("message") or reason
                return Waiting(reason, _one_line(f"pod {_name(pod)}: container {container.get('name')}: {detail}"))
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == UNSCHEDULABLE
        ):
            detail = condition.get("message") or "no node fits"
            return Waiting(UNSCHEDULABLE, _one_line(f"pod {_name(pod)} unschedulable: {detail}"))
    return None


def pods_started(pods: Sequence[Mapping[str, Any]]) -> bool:
    """Some pod of the attempt got past Pending: the attempt has started (or already ended)."""
    return any((pod.get("status") or {}).get("phase", "Pending") != "Pending" for pod in pods)


def _created_by(event: Mapping[str, Any], job_name: str) -> bool:
    """The event is about the job itself or a child it owns by name (a TrainJob's `<job>-node-0` Job)."""
    involved = str((event.get("involvedObject") or {}).get("name") or "")
    return involved == job_name or involved.startswith(job_name + "-")


def creation_refused(events: Sequence[Mapping[str, Any]], job_name: str) -> Waiting | None:
    """The newest event saying the job's controller could not create a pod: Pod Security
    admission (reason PodSecurity), a quota or anything else (the event's own reason)."""
    refused = [
        e
        for e in events
        if e.get("type") == "Warning" and e.get("reason") in CREATE_FAILED_EVENTS and _created_by(e, job_name)
    ]
    if not refused:
        return None
    newest = max(refused, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    message = str(newest.get("message") or newest.get("reason"))
    reason = POD_SECURITY if "violates PodSecurity" in message else str(newest.get("reason"))
    return Waiting(reason, _one_line(f"pods not created: {message}"))


def why_waiting(
    pods: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]], job_name: str
) -> Waiting | None:
    """The attempt's reason to wait: the first pod (by name) with a problem; with no pods at all,
    why the controller could not create them. None when nothing needs acting on."""
    for pod in sorted(pods, key=_name):
        found = pod_waiting(pod)
        if found is not None:
            return found
    if not pods:
        return creation_refused(events, job_name)
    return None


def start_clock(body: Mapping[str, Any]) -> str | None:
    """When the attempt's pods were first asked for: the job's creation, or its last resume (a
    job created suspended, e.g. queued in Kueue, waits for admission, not for its pods). The
    Suspended condition's transition to False marks a resume for both job kinds."""
    meta = body.get("metadata") or {}
    clock = meta.get("creationTimestamp")
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Suspended" and condition.get("status") == "False":
            resumed = condition.get("lastTransitionTime")
            if resumed and (clock is None or str(resumed) > str(clock)):
                clock = resumed
    return str(clock) if clock else None
