"""A stage's result as the cluster reports it: the Master pod's termination message. Pure.

The trainer writes its StageResult as compact JSON to /dev/termination-log; the kubelet keeps it
in the pod's container status. A launcher says which pod is the Master and which container
runs the trainer (launchers/*); reading the message is the same for every launcher.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rlhf_api.result import StageResult, load_result


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
    """The StageResult in a termination message and what of it was dropped (None: nothing), or
    (None, why there is none). Total: whatever the message holds (rlhf_api.result.load_result)."""
    if not message:
        return None, "the master pod has no termination message"
    result, notes = load_result(message)
    if result is None:
        return None, f"the master pod's termination message is not a stage result: {notes[0]}"
    return result, ("fields dropped: " + "; ".join(notes)) if notes else None


def result_from_pods(
    pods: Sequence[Mapping[str, Any]], selector: Mapping[str, str], container: str
) -> tuple[StageResult | None, str | None]:
    """The result in the first pod matching the Master `selector` and what of it was dropped,
    or (None, why there is none)."""
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if matches(labels, selector):
            return parse_result(termination_message(pod, container))
    return None, "no master pod found (deleted with its job, or never started)"


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
