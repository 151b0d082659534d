"""`rlhf status`'s decisions, pure: what a run waits on, from the run, its job and its Master pod."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from rich.console import Console
from rlhf_cli.cluster.view import Observed, render, waiting_on
from rlhf_operator.reconcile.status_store import load_status


def run(phase: str = "Running", stage_phase: str = "Running", suspend: bool = False, **stage: Any) -> dict[str, Any]:
    entry = {"name": "sft", "phase": stage_phase, "attempts": 1, "jobName": "demo-sft-1", **stage}
    return {
        "metadata": {"name": "demo", "namespace": "team"},
        "spec": {"suspend": suspend},
        "status": {"phase": phase, "currentStage": "sft", "stages": [entry], "message": "stage sft failed: OOM"},
    }


def stalled_run(message: str) -> dict[str, Any]:
    """A run whose first write the API server refused (no job yet): the server's words show."""
    body = run("Pending", "Pending", jobName=None, attempts=0)
    stalled = {"type": "Stalled", "status": "True", "reason": "CreateRefused", "message": message}
    body["status"]["conditions"] = [dict(stalled, lastTransitionTime="2026-01-01T00:00:00Z")]
    return body


def job(*conditions: str, suspend: bool = False, queue: str | None = None) -> dict[str, Any]:
    labels = {"kueue.x-k8s.io/queue-name": queue} if queue else {}
    return {
        "kind": "PyTorchJob",
        "metadata": {"name": "demo-sft-1", "labels": labels},
        "spec": {"runPolicy": {"suspend": suspend}},
        "status": {"conditions": [{"type": c, "status": "True", "message": f"{c} msg"} for c in conditions]},
    }


def pod(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "demo-sft-1-master-0"}, "status": status}


UNSCHEDULABLE = {"conditions": [{"type": "PodScheduled", "status": "False", "message": "0/3 nodes: Insufficient gpu"}]}
IMAGE_PULL = {"containerStatuses": [{"name": "pytorch", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        (Observed(run("Succeeded", "Succeeded")), "nothing: every stage succeeded"),
        (Observed(run("Failed", "Failed")), "nothing: the run failed (stage sft failed: OOM)"),
        (Observed(run(suspend=True)), "you: spec.suspend is true; set it to false to resume"),
        (Observed(run("Suspended", "Suspended")), "you: spec.suspend is true; set it to false to resume"),
        (
            Observed({"metadata": {}, "spec": {}}),
            "the operator: the run has no status yet (is rlhf-operator running and watching this namespace?)",
        ),
        (
            Observed(stalled_run("exceeded quota: team-quota")),
            "a fix: the operator is stalled (CreateRefused): exceeded quota: team-quota",
        ),
        (
            Observed(run(stage_phase="Retrying", retryAfter="2026-01-01T00:05:00Z", message="OOMKilled")),
            "attempt 2 of sft, after 2026-01-01T00:05:00Z (OOMKilled)",
        ),
        (Observed(run()), "the operator to create sft's job demo-sft-1"),
        (Observed(run(), job(suspend=True, queue="gpus")), "Kueue to admit PyTorchJob demo-sft-1 (queue gpus)"),
        (Observed(run(), job(suspend=True)), "PyTorchJob demo-sft-1 is suspended"),
        (Observed(run(), job()), "the training operator to start the pods of PyTorchJob demo-sft-1"),
        (
            Observed(run(), job("Created"), pod(phase="Pending", **UNSCHEDULABLE)),
            "pod demo-sft-1-master-0 to be scheduled: 0/3 nodes: Insufficient gpu",
        ),
        (
            Observed(run(), job("Created"), pod(phase="Pending", **IMAGE_PULL)),
            "pod demo-sft-1-master-0: container pytorch is ImagePullBackOff",
        ),
        (Observed(run(), job("Created"), pod(phase="Pending")), "PyTorchJob demo-sft-1 to start running"),
        (Observed(run(), job("Created", "Running")), "stage sft to finish training (PyTorchJob demo-sft-1 is running)"),
        (Observed(run(), job("Restarting")), "PyTorchJob demo-sft-1 to restart its pods (Restarting msg)"),
        (Observed(run(), job("Succeeded")), "the operator to record the result of PyTorchJob demo-sft-1 (Succeeded)"),
    ],
)
def test_waiting_on(observed: Observed, expected: str) -> None:
    assert waiting_on(observed) == expected


def test_status_from_a_newer_operator_with_unknown_fields_still_reads() -> None:
    status = load_status(
        {"phase": "Running", "futureField": 1, "stages": [{"name": "sft", "phase": "Running", "newThing": "x"}]}
    )
    assert status.phase == "Running" and status.stages[0].name == "sft"
    # ... and so does a value this version does not know (a newer condition type).
    status = load_status({"phase": "Running", "conditions": [{"type": "FutureCondition", "status": "True"}]})
    assert status.phase == "Running" and status.conditions == []


def test_render_lists_stages_conditions_and_the_wait() -> None:
    body = run(startTime="2026-01-01T00:00:00Z", metrics={"task_accuracy": 0.5, "ignored_metric": 1.0})
    body["metadata"]["generation"] = 3
    body["status"]["observedGeneration"] = 2
    body["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "StageRunning", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    ]
    out = io.StringIO()
    now = dt.datetime(2026, 1, 1, 0, 2, 5, tzinfo=dt.UTC)
    Console(file=out, width=160).print(render(Observed(body, job("Running")), now))
    text = out.getvalue()
    assert "RLHFRun team/demo  phase Running  stage sft" in text
    assert "spec generation 3, operator has seen 2" in text
    assert "2m05s" in text and "task_accuracy=0.5" in text and "ignored_metric" not in text
    assert "StageRunning" in text
    assert text.rstrip().endswith("Waiting on: stage sft to finish training (PyTorchJob demo-sft-1 is running)")


def test_render_shows_the_running_stage_s_step_percent_speed_and_eta() -> None:
    """Issue 23, item 10: the status has them (the printer columns show 20% and 4m); `rlhf status`
    (and so `kubectl rlhf status`) showed neither."""
    progress = {
        "step": 120,
        "totalSteps": 600,
        "percent": 20.0,
        "stepsPerSecond": 2.0,
        "estimatedCompletionTime": "2026-01-01T00:06:05Z",
        "lastProgressTime": "2026-01-01T00:02:05Z",
    }
    body = run(startTime="2026-01-01T00:00:00Z", progress=progress)
    out = io.StringIO()
    now = dt.datetime(2026, 1, 1, 0, 2, 5, tzinfo=dt.UTC)
    Console(file=out, width=160).print(render(Observed(body, job("Running")), now))
    assert "sft: step 120/600 (20%), 2m05s, ETA 4m00s, 2 steps/s" in out.getvalue()


@pytest.mark.parametrize("step", [float("nan"), float("inf"), 10**400, "120", [120]])
def test_render_survives_any_progress_the_status_holds(step: Any) -> None:
    body = run(progress={"step": step, "totalSteps": float("inf"), "stepsPerSecond": float("nan")})
    out = io.StringIO()
    Console(file=out, width=160).print(render(Observed(body, job("Running")), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))
    assert "Waiting on:" in out.getvalue()
