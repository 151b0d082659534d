"""The pure state machine, table-driven: (run body, observed jobs, now) -> (actions, status)."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rlhf_api.naming import STAGE_JOB_FINALIZER
from rlhf_api.result import StageResult
from rlhf_operator.api_ref import CONFIGMAPS, PVCS
from rlhf_operator.estimate import fit_warnings
from rlhf_operator.launchers import PYTORCHJOB, TRAINJOB
from rlhf_operator.observed_job import JOB_STATES, ObservedJob
from rlhf_operator.pod_result import failure_message, parse_result, result_from_pods
from rlhf_operator.reconcile import (
    Create,
    EndJob,
    Outcome,
    PatchJob,
    PostEvent,
    ReleaseJob,
    merge_patch,
    reconcile,
    results_needed,
)
from rlhf_operator.settings import OperatorSettings

from .conftest import base_run, dpo_run

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
SETTINGS = OperatorSettings(metrics_port=0)
RUN_PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")


def body_of(run: dict[str, Any], generation: int = 1, uid: str = "uid-1") -> dict[str, Any]:
    body = copy.deepcopy(run)
    body["metadata"].update(uid=uid, generation=generation, resourceVersion="1")
    return body


def step(
    body: dict[str, Any], jobs: dict[str, ObservedJob] | None = None, now: datetime = NOW
) -> tuple[Outcome, dict[str, Any]]:
    """One reconcile pass; returns the outcome and the body as it is after the status patch."""
    outcome = reconcile(body, jobs or {}, now, SETTINGS, fit_check=fit_warnings)
    after = copy.deepcopy(body)
    after["status"] = outcome.new_status
    return outcome, after


def creates(outcome: Outcome) -> list[str]:
    return [a.name for a in outcome.actions if isinstance(a, Create)]


def job(name: str, state: str, suspended: bool = False, result: StageResult | None = None) -> dict[str, ObservedJob]:
    return {
        name: ObservedJob(name=name, state=state, suspended=suspended, message=f"{state.lower()} msg", result=result)
    }  # type: ignore[arg-type]


def stage_of(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in body["status"]["stages"] if s["name"] == name)


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == type_)


def result(stage: str, loss: float = 0.5) -> StageResult:
    out = f"/workspace/demo/{stage}"
    return StageResult(
        stage=stage, status="succeeded", output_path=out, merged_path=f"{out}/merged", metrics={"loss": loss}
    )  # type: ignore[arg-type]


# --- building a run into each phase ---------------------------------------------------------


def in_phase(phase: str) -> tuple[dict[str, Any], dict[str, ObservedJob]]:
    """A run body in `phase` and the jobs the operator would observe for it."""
    body = body_of(base_run("demo"))
    if phase == "Pending":
        return body, {}
    _, body = step(body)  # Running: sft-1 created
    if phase == "Running":
        return body, job("demo-sft-1", "Running")
    if phase == "Suspended":
        body["spec"]["suspend"] = True
        _, body = step(body, job("demo-sft-1", "Running"))
        return body, job("demo-sft-1", "Running", suspended=True)
    if phase == "Succeeded":
        for stage in ("sft", "reward", "ppo"):
            _, body = step(body, job(f"demo-{stage}-1", "Succeeded", result=result(stage)))
        return body, job("demo-ppo-1", "Succeeded", result=result("ppo"))
    if phase == "Failed":
        for attempt in (1, 2, 3):
            _, body = step(body, job(f"demo-sft-{attempt}", "Failed"))
        return body, job("demo-sft-3", "Failed")
    raise AssertionError(phase)


@pytest.mark.parametrize("phase", RUN_PHASES)
def test_phase_builder(phase: str) -> None:
    body, _ = in_phase(phase)
    assert (body.get("status") or {}).get("phase", "Pending") == phase


# Expected (run phase afterwards, jobs created, job patches) for every run phase x job state.
# The observed job is the active stage's (sft attempt 1; for Failed runs attempt 3; for
# Succeeded runs ppo). Pending runs have not written a status yet: whatever exists, the first
# job is created (409 if it is there: deterministic names).
EXPECTED: dict[tuple[str, str], tuple[str, list[str], list[bool]]] = {}
for _state in JOB_STATES:
    EXPECTED[("Pending", _state)] = (
        "Running",
        ["demo-data", "demo-pods", "demo-sft-config", "demo-sft-1"],
        [],
    )
    EXPECTED[("Running", _state)] = ("Running", [], [])
    EXPECTED[("Suspended", _state)] = ("Suspended", [], [])
    EXPECTED[("Succeeded", _state)] = ("Succeeded", [], [])
    EXPECTED[("Failed", _state)] = ("Failed", [], [])
EXPECTED[("Running", "Succeeded")] = ("Running", ["demo-reward-config", "demo-reward-1"], [])
EXPECTED[("Running", "Failed")] = ("Running", ["demo-sft-2"], [])  # retryBackoffSeconds 0: at once
EXPECTED[("Suspended", "Succeeded")] = ("Suspended", ["demo-reward-config", "demo-reward-1"], [])
EXPECTED[("Suspended", "Failed")] = ("Suspended", ["demo-sft-2"], [])


@pytest.mark.parametrize("state", JOB_STATES)
@pytest.mark.parametrize("phase", RUN_PHASES)
def test_every_phase_and_job_condition(phase: str, state: str) -> None:
    body, jobs = in_phase(phase)
    name = next(iter(jobs)) if jobs else "demo-sft-1"
    observed = job(name, state, suspended=phase == "Suspended", result=result("sft") if state == "Succeeded" else None)
    outcome, after = step(body, observed)
    want_phase, want_creates, want_patches = EXPECTED[(phase, state)]
    assert after["status"]["phase"] == want_phase
    assert creates(outcome) == want_creates
    assert [a.patch for a in outcome.actions if isinstance(a, PatchJob)] == want_patches
    # Jobs created while the run is suspended start suspended.
    for action in outcome.actions:
        if isinstance(action, Create) and action.api.plural == "pytorchjobs":
            assert action.body["spec"]["runPolicy"]["suspend"] is (phase == "Suspended")
    # A failed stage whose job still runs gets it ended, on every pass until it is seen deleting.
    ends = [a.name for a in outcome.actions if isinstance(a, EndJob)]
    assert ends == (["demo-sft-3"] if phase == "Failed" and state not in ("Succeeded", "Failed") else [])
    # The pass is a fixed point: once its own status is stored, nothing more happens.
    again, _ = step(after, observed if not want_creates else {})
    if not want_creates:
        assert [a for a in again.actions if not isinstance(a, EndJob)] == [] and again.status_patch == {}
        assert again.ends == outcome.ends


def test_new_run_creates_volume_configs_first_job_and_reports_status() -> None:
    outcome, after = step(body_of(base_run("demo"), generation=3))
    kinds = [(a.api.plural, a.name) for a in outcome.actions if isinstance(a, Create)]
    assert kinds == [
        ("persistentvolumeclaims", "demo-data"),
        ("networkpolicies", "demo-pods"),
        ("configmaps", "demo-sft-config"),
        ("pytorchjobs", "demo-sft-1"),
    ]
    status = after["status"]
    assert status["phase"] == "Running" and status["currentStage"] == "sft"
    assert status["volumeClaim"] == "demo-data"
    assert len(stage_of(after, "sft").pop("configHash")) == 16  # the config's identity (test_identity_reconcile)
    assert stage_of(after, "sft") == {
        "name": "sft",
        "phase": "Running",
        "jobName": "demo-sft-1",
        "attempts": 1,
        "startTime": "2026-01-01T12:00:00Z",
        "metrics": {},
    }
    assert status["observedGeneration"] == 3
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "False",
        "Reconciling": "True",
        "Stalled": "False",
    }
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])
    events = [a for a in outcome.actions if isinstance(a, PostEvent)]
    assert len(events) == 1 and events[0].body["reason"] == "StageStarted"
    # Every child is owned by the run (garbage collection); Retain: the PVC is not.
    for action in outcome.actions:
        if isinstance(action, Create) and action.api != PVCS:
            assert action.body["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    pvc = next(a for a in outcome.actions if isinstance(a, Create) and a.api == PVCS)
    assert "ownerReferences" not in pvc.body["metadata"]


def test_idempotent_same_input_twice() -> None:
    _, body = step(body_of(base_run("demo")))
    for observed in ({}, job("demo-sft-1", "Pending"), job("demo-sft-1", "Running")):
        outcome, _ = step(body, observed, NOW + timedelta(minutes=5))
        if observed:
            assert outcome.actions == [] and outcome.status_patch == {}


def test_full_pipeline_passes_results_on_and_succeeds() -> None:
    first, body = step(body_of(base_run("demo")))
    writes = len(first.actions) + 1  # PVC, NetworkPolicy, sft ConfigMap, sft job, event + the status patch
    for stage, following in (("sft", "reward"), ("reward", "ppo"), ("ppo", None)):
        outcome, body = step(body, job(f"demo-{stage}-1", "Succeeded", result=result(stage, loss=0.1)))
        assert creates(outcome) == ([f"demo-{following}-config", f"demo-{following}-1"] if following else [])
        assert len([a for a in outcome.actions if isinstance(a, PostEvent)]) == 1
        writes += len(outcome.actions) + 1
    assert body["status"]["phase"] == "Succeeded"
    assert condition(body, "Ready")["status"] == "True"
    assert condition(body, "Reconciling")["status"] == "False"
    assert stage_of(body, "reward")["metrics"] == {"loss": 0.1}
    assert stage_of(body, "ppo")["mergedPath"] == "/workspace/demo/ppo/merged"
    assert writes == 6 + 4 + 4 + 2 <= 17  # per stage: status patch, event (and the next config + job)


def test_result_missing_falls_back_to_planned_paths() -> None:
    _, body = step(body_of(base_run("demo")))
    observed = {"demo-sft-1": ObservedJob("demo-sft-1", "Succeeded", result_error="no master pod found")}
    _, body = step(body, observed)
    sft = stage_of(body, "sft")
    assert sft["phase"] == "Succeeded" and sft["mergedPath"] == "/workspace/demo/sft/merged"
    assert sft["message"] == "result unreadable: no master pod found" and sft["resultUnknown"] is True


def test_retry_backoff_doubles_then_exhausts() -> None:
    run = base_run("demo")
    run["spec"]["sft"].update(retries=2, retryBackoffSeconds=60)
    _, body = step(body_of(run))
    # Attempt 1 fails: wait 60 s.
    outcome, body = step(body, job("demo-sft-1", "Failed"))
    assert creates(outcome) == [] and outcome.requeue_after == 60
    sft = stage_of(body, "sft")
    assert sft["phase"] == "Retrying" and sft["retryAfter"] == "2026-01-01T12:01:00Z"
    assert "attempt 1 failed: failed msg" in sft["message"]
    assert [a.body["type"] for a in outcome.actions if isinstance(a, PostEvent)] == ["Warning"]
    # Too early: nothing, requeue for the rest.
    outcome, _ = step(body, job("demo-sft-1", "Failed"), NOW + timedelta(seconds=45))
    assert outcome.actions == [] and outcome.requeue_after == 15
    # Due: attempt 2 under a new name.
    outcome, body = step(body, job("demo-sft-1", "Failed"), NOW + timedelta(seconds=60))
    assert creates(outcome) == ["demo-sft-2"] and stage_of(body, "sft")["attempts"] == 2
    # Attempt 2 fails: 120 s.
    later = NOW + timedelta(seconds=100)
    outcome, body = step(body, job("demo-sft-2", "Failed"), later)
    assert outcome.requeue_after == 120
    outcome, body = step(body, job("demo-sft-2", "Failed"), later + timedelta(seconds=120))
    assert creates(outcome) == ["demo-sft-3"]
    # Attempt 3 fails: retries (2) exhausted.
    outcome, body = step(body, job("demo-sft-3", "Failed"), later + timedelta(seconds=500))
    assert creates(outcome) == [] and outcome.requeue_after is None
    assert body["status"]["phase"] == "Failed"
    assert stage_of(body, "sft")["phase"] == "Failed"
    assert condition(body, "Stalled")["status"] == "True"
    assert "failed after 3 attempt(s)" in body["status"]["message"]
    # Terminal: nothing more, ever.
    outcome, _ = step(body, job("demo-sft-3", "Failed"), later + timedelta(days=1))
    assert outcome.actions == [] and outcome.status_patch == {}


def test_failure_after_earlier_stages_leaves_them_untouched() -> None:
    run = base_run("demo")
    run["spec"]["reward"]["retries"] = 0
    _, body = step(body_of(run))
    _, body = step(body, job("demo-sft-1", "Succeeded", result=result("sft")))
    sft_before = stage_of(body, "sft")
    _, body = step(body, job("demo-reward-1", "Failed"))
    assert body["status"]["phase"] == "Failed"
    assert stage_of(body, "sft") == sft_before
    assert stage_of(body, "ppo")["phase"] == "Pending"


def test_skipped_stage_uses_existing_output() -> None:
    run = base_run("demo")
    run["spec"]["sft"]["existingOutput"] = "/workspace/shared/sft-model"
    run["spec"]["pipeline"] = ["sft", "reward", "ppo"]
    outcome, body = step(body_of(run))
    assert creates(outcome) == ["demo-data", "demo-pods", "demo-reward-config", "demo-reward-1"]
    sft = stage_of(body, "sft")
    assert sft["phase"] == "Skipped" and sft["mergedPath"] == "/workspace/shared/sft-model"
    assert body["status"]["currentStage"] == "reward"


def test_dpo_pipeline() -> None:
    outcome, body = step(body_of(dpo_run("demo")))
    assert creates(outcome)[-1] == "demo-sft-1"
    outcome, body = step(body, job("demo-sft-1", "Succeeded", result=result("sft")))
    assert creates(outcome) == ["demo-dpo-config", "demo-dpo-1"]
    dpo_job = [a for a in outcome.actions if isinstance(a, Create)][-1]
    assert dpo_job.body["metadata"]["labels"]["rlhf.dev/stage"] == "dpo"
    outcome, body = step(body, job("demo-dpo-1", "Succeeded", result=result("dpo")))
    assert body["status"]["phase"] == "Succeeded"
    assert [s["name"] for s in body["status"]["stages"]] == ["sft", "dpo"]


def test_suspend_and_resume() -> None:
    _, body = step(body_of(base_run("demo")))
    body["spec"]["suspend"] = True
    body["metadata"]["generation"] = 2
    outcome, body = step(body, job("demo-sft-1", "Running"))
    assert [(a.name, a.patch) for a in outcome.actions if isinstance(a, PatchJob)] == [
        ("demo-sft-1", {"spec": {"runPolicy": {"suspend": True}}})
    ]
    assert body["status"]["phase"] == "Suspended" and stage_of(body, "sft")["phase"] == "Suspended"
    assert body["status"]["observedGeneration"] == 2
    assert condition(body, "Reconciling")["status"] == "True"
    # Suspended job observed: nothing more to do.
    outcome, body = step(body, job("demo-sft-1", "Suspended", suspended=True))
    assert outcome.actions == [] and outcome.status_patch == {}
    body["spec"]["suspend"] = False
    outcome, body = step(body, job("demo-sft-1", "Suspended", suspended=True))
    assert [a.patch for a in outcome.actions if isinstance(a, PatchJob)] == [
        {"spec": {"runPolicy": {"suspend": False}}}
    ]
    assert body["status"]["phase"] == "Running"


def test_trainjob_launcher_suspends_spec_suspend() -> None:
    run = base_run("demo", launcher="trainjob")
    outcome, body = step(body_of(run))
    created = [a for a in outcome.actions if isinstance(a, Create)][-1]
    assert created.api.plural == "trainjobs" and created.body["kind"] == "TrainJob"
    body["spec"]["suspend"] = True
    outcome, _ = step(body, job("demo-sft-1", "Running"))
    assert [a.patch for a in outcome.actions if isinstance(a, PatchJob)] == [{"spec": {"suspend": True}}]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s.update(pipeline=["dpo", "sft"]), "pipeline"),
        (lambda s: s["placement"].update(workers=0), "spec.placement.workers"),
        (lambda s: s.pop("reward"), "reward"),
    ],
)
def test_invalid_spec_fails_without_retries(mutate: Any, field: str) -> None:
    run = base_run("demo")
    mutate(run["spec"])
    outcome, body = step(body_of(run, generation=4))
    assert creates(outcome) == []
    status = body["status"]
    assert status["phase"] == "Failed" and field in status["message"]
    stalled = condition(body, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "InvalidSpec"
    assert stalled["observedGeneration"] == 4
    assert [a.body["reason"] for a in outcome.actions if isinstance(a, PostEvent)] == ["InvalidSpec"]
    again, _ = step(body)
    assert again.actions == [] and again.status_patch == {}


def test_fixed_spec_recovers_from_invalid() -> None:
    run = base_run("demo")
    run["spec"]["pipeline"] = ["dpo", "sft"]
    _, body = step(body_of(run))
    body["spec"]["pipeline"] = ["sft", "reward", "ppo"]
    body["metadata"]["generation"] = 2
    outcome, body = step(body)
    assert "demo-sft-1" in creates(outcome)
    assert body["status"]["phase"] == "Running" and condition(body, "Stalled")["status"] == "False"


def test_immutable_pipeline_change_is_rejected() -> None:
    _, body = step(body_of(base_run("demo")))
    body["spec"]["pipeline"] = ["sft", "reward"]
    del body["spec"]["ppo"]
    outcome, body = step(body, job("demo-sft-1", "Succeeded", result=result("sft")))
    assert creates(outcome) == []
    assert condition(body, "Stalled")["status"] == "True"
    assert "pipeline: immutable" in body["status"]["message"]


def test_existing_claim_and_retention_delete() -> None:
    outcome, body = step(body_of(base_run("demo", storage={"existingClaim": "shared-data"})))
    assert [a for a in outcome.actions if isinstance(a, Create) and a.api == PVCS] == []
    assert body["status"]["volumeClaim"] == "shared-data"
    job_body = next(a.body for a in outcome.actions if isinstance(a, Create) and a.api.plural == "pytorchjobs")
    volumes = job_body["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["volumes"]
    assert any((v.get("persistentVolumeClaim") or {}).get("claimName") == "shared-data" for v in volumes)
    outcome, _ = step(body_of(base_run("demo", storage={"retention": "Delete"})))
    pvc = next(a for a in outcome.actions if isinstance(a, Create) and a.api == PVCS)
    assert pvc.body["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert [a.api for a in outcome.actions if isinstance(a, Create)].count(CONFIGMAPS) == 1


def test_restarting_job_is_reported_once() -> None:
    _, body = step(body_of(base_run("demo")))
    outcome, body = step(body, job("demo-sft-1", "Restarting"))
    assert creates(outcome) == [] and stage_of(body, "sft")["message"].startswith("job demo-sft-1 restarting")
    assert len([a for a in outcome.actions if isinstance(a, PostEvent)]) == 1
    again, _ = step(body, job("demo-sft-1", "Restarting"))
    assert again.actions == [] and again.status_patch == {}


def test_results_needed_only_for_unrecorded_successes() -> None:
    _, body = step(body_of(base_run("demo")))
    assert results_needed(body["status"], job("demo-sft-1", "Running")) == []
    assert results_needed(body["status"], job("demo-sft-1", "Succeeded")) == ["demo-sft-1"]


def test_merge_patch_removes_and_nests() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}
    new = {"a": 1, "b": {"c": 2}, "e": [1, 2], "f": "x"}
    assert merge_patch(old, new) == {"b": {"d": None}, "e": [1, 2], "f": "x"}
    assert merge_patch(new, new) == {}


def test_observe_job_conditions_and_results() -> None:
    body = {
        "metadata": {
            "name": "demo-sft-2",
            "labels": {"rlhf.dev/stage": "sft", "rlhf.dev/attempt": "2", "rlhf.dev/run": "demo"},
            "ownerReferences": [{"uid": "u", "controller": True}],
        },
        "spec": {"runPolicy": {"suspend": True}},
        "status": {
            "conditions": [
                {"type": "Created", "status": "True"},
                {"type": "Running", "status": "False"},
                {"type": "Failed", "status": "True", "message": "OOMKilled"},
            ]
        },
    }
    seen = PYTORCHJOB.observe(body)
    assert (seen.state, seen.message, seen.stage, seen.attempt, seen.suspended, seen.owner_uid) == (
        "Failed",
        "OOMKilled",
        "sft",
        2,
        True,
        "u",
    )
    assert TRAINJOB.observe({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}).state == "Succeeded"
    assert PYTORCHJOB.observe({}).state == "Pending"
    good = result("sft").termination_message()
    assert parse_result(good)[0] == result("sft")
    assert parse_result("Traceback (most recent call last): ...")[0] is None
    pods = [
        {
            "metadata": {
                "labels": {"training.kubeflow.org/job-name": "other", "training.kubeflow.org/replica-type": "master"}
            },
            "status": {"containerStatuses": [{"name": "pytorch", "state": {"terminated": {"message": "{}"}}}]},
        },
        {
            "metadata": {
                "labels": {
                    "training.kubeflow.org/job-name": "demo-sft-1",
                    "training.kubeflow.org/replica-type": "master",
                }
            },
            "status": {"containerStatuses": [{"name": "pytorch", "state": {"terminated": {"message": good}}}]},
        },
    ]
    master = PYTORCHJOB.master_pod_selector
    assert result_from_pods(pods, master("demo-sft-1"), "pytorch") == (result("sft"), None)
    assert result_from_pods(pods, master("demo-sft-9"), "pytorch")[0] is None


def test_first_pass_fits_the_write_budget_with_existing_claim() -> None:
    outcome, _ = step(body_of(base_run("demo", storage={"existingClaim": "shared"})))
    # No PVC: the NetworkPolicy, the sft config, its job, one status patch and one event.
    assert creates(outcome) == ["demo-pods", "demo-sft-config", "demo-sft-1"]
    assert len(outcome.events) == 1 and outcome.status_patch


def test_failure_message_takes_the_trainers_last_words() -> None:
    pod = {
        "status": {
            "containerStatuses": [
                {
                    "name": "pytorch",
                    "state": {"terminated": {"message": "Traceback ...\n  x\nRuntimeError: CUDA out of memory\n"}},
                }
            ]
        }
    }
    assert failure_message("PyTorchJob failed", None, [pod]) == "PyTorchJob failed: RuntimeError: CUDA out of memory"
    failed = StageResult(stage="sft", status="failed", output_path="/o", message="dataset: no rows")
    assert failure_message("", failed, []) == "dataset: no rows"
    assert failure_message("OOMKilled", None, []) == "OOMKilled"


# --- weak spots found by the fault drill --------------------------------------------------------


def deleting(name: str, state: str, result_: StageResult | None = None, **extra: Any) -> dict[str, ObservedJob]:
    """A job someone deleted (user, TTL, garbage collector), held by the operator's finalizer."""
    observed = job(name, state, result=result_)[name]
    return {
        name: dataclasses.replace(
            observed, deleting=True, finalizers=(STAGE_JOB_FINALIZER, "other/finalizer"), resource_version="7", **extra
        )
    }


def releases(outcome: Outcome) -> list[tuple[str, dict[str, Any]]]:
    return [(a.name, a.patch) for a in outcome.actions if isinstance(a, ReleaseJob)]


def event_reasons(outcome: Outcome) -> list[tuple[str, str]]:
    return [(a.body["type"], a.body["reason"]) for a in outcome.events]


@pytest.mark.parametrize(
    ("observed", "why"),
    [
        ({}, "job demo-sft-1 is gone (deleted)"),  # vanished (finalizer removed by force)
        (deleting("demo-sft-1", "Running"), "job demo-sft-1 was deleted"),  # deleted while it ran
    ],
)
def test_deleted_job_is_a_failed_attempt(observed: dict[str, ObservedJob], why: str) -> None:
    _, body = step(body_of(base_run("demo")))
    outcome, after = step(body, observed)
    sft = stage_of(after, "sft")
    assert sft["attempts"] == 2 and sft["jobName"] == "demo-sft-2"  # retried at once (backoff 0)
    assert sft["message"] == f"attempt 1 failed: {why}"
    assert creates(outcome) == ["demo-sft-2"]
    assert event_reasons(outcome) == [("Warning", "StageJobDeleted")]
    # The deleted job is released only after its outcome is recorded (after the status patch).
    if observed:
        assert releases(outcome) == [
            ("demo-sft-1", {"metadata": {"finalizers": ["other/finalizer"], "resourceVersion": "7"}})
        ]
    # Counted against retries: with none left, the stage fails.
    _, body = step(body_of(base_run("demo", sft={"dataset": {"source": "builtin:arithmetic"}, "retries": 0})))
    _, after = step(body, observed)
    assert stage_of(after, "sft")["phase"] == "Failed" and after["status"]["phase"] == "Failed"


def test_finished_job_removed_by_ttl_while_the_operator_was_down_is_not_run_again() -> None:
    _, body = step(body_of(base_run("demo")))
    # The job succeeded and the TTL controller deleted it; the finalizer kept it for us.
    outcome, after = step(body, deleting("demo-sft-1", "Succeeded", result("sft")))
    assert stage_of(after, "sft")["phase"] == "Succeeded" and stage_of(after, "sft")["metrics"] == {"loss": 0.5}
    assert creates(outcome) == ["demo-reward-config", "demo-reward-1"]
    assert [name for name, _ in releases(outcome)] == ["demo-sft-1"]
    # Later the job is gone for good: the succeeded stage is never run again.
    for observed in ({}, deleting("demo-sft-1", "Succeeded", result("sft"))):
        again, _ = step(after, {**observed, **job("demo-reward-1", "Running")})
        assert creates(again) == [] and stage_of(after, "sft")["attempts"] == 1


def test_unreadable_result_is_a_visible_warning_and_the_run_goes_on() -> None:
    _, body = step(body_of(base_run("demo")))
    observed = deleting("demo-sft-1", "Succeeded", None, result_error="no master pod found")
    outcome, after = step(body, observed)
    sft = stage_of(after, "sft")
    assert sft["phase"] == "Succeeded" and sft["resultUnknown"] is True
    assert sft["message"] == "result unreadable: no master pod found"
    assert event_reasons(outcome) == [("Warning", "StageResultUnreadable")]
    assert condition(after, "ResultsRead")["status"] == "False"
    assert condition(after, "ResultsRead")["reason"] == "StageResultUnreadable"
    assert creates(outcome) == ["demo-reward-config", "demo-reward-1"]  # the handover check decides
    again, _ = step(after, job("demo-reward-1", "Running"))
    assert again.actions == [] and again.status_patch == {}


def test_resumed_from_step_reaches_the_stage_status() -> None:
    _, body = step(body_of(base_run("demo")))
    resumed = result("sft").model_copy(update={"resumed_from_step": 40})
    _, after = step(body, job("demo-sft-1", "Succeeded", result=resumed))
    assert stage_of(after, "sft")["resumedFromStep"] == 40


def test_kueue_run_is_not_unsuspended_by_the_operator() -> None:
    body = body_of(base_run("demo", queueName="team-queue"))
    _, body = step(body)
    body["spec"]["suspend"] = True
    _, body = step(body, job("demo-sft-1", "Running"))
    assert body["status"]["phase"] == "Suspended"
    body["spec"]["suspend"] = False
    outcome, after = step(body, job("demo-sft-1", "Suspended", suspended=True))
    assert [a for a in outcome.actions if isinstance(a, PatchJob)] == []  # Kueue admits, then unsuspends
    assert stage_of(after, "sft")["phase"] == "Queued"  # waiting for Kueue, not running
    assert "team-queue" in stage_of(after, "sft")["message"]
    _, admitted = step(after, job("demo-sft-1", "Running"))
    assert stage_of(admitted, "sft")["phase"] == "Running"


@pytest.mark.parametrize(
    "damage",
    [
        lambda st: st.update(futureField={"added": "by a newer operator"}),
        lambda st: st["stages"][0].update(attempts="two", renamedField=1),
        lambda st: st["conditions"][0].update(type="SomethingNew"),
        lambda st: st.update(phase="Exploded"),
    ],
)
def test_unreadable_stored_status_keeps_its_history(damage: Any) -> None:
    _, body = step(body_of(base_run("demo")))
    _, body = step(body, job("demo-sft-1", "Succeeded", result=result("sft")))
    damage(body["status"])
    outcome, after = step(body, job("demo-reward-1", "Running"))
    assert stage_of(after, "sft")["phase"] == "Succeeded"  # not reset to Pending
    assert stage_of(after, "reward")["jobName"] == "demo-reward-1"
    assert creates(outcome) == []  # nothing re-run
    assert "futureField" not in outcome.status_patch  # keys it does not know are left alone


def test_preempted_attempt_resumes_at_once_and_is_not_counted() -> None:
    body = body_of(base_run("demo", sft={"dataset": {"source": "builtin:arithmetic"}, "retries": 0}))
    _, body = step(body)
    preempted = result("sft").model_copy(update={"status": "failed", "preempted": True, "exit_code": 143})
    for attempt in (1, 2):
        observed = {
            f"demo-sft-{attempt}": dataclasses.replace(
                job(f"demo-sft-{attempt}", "Failed")[f"demo-sft-{attempt}"], result=preempted
            )
        }
        outcome, body = step(body, observed)
        sft = stage_of(body, "sft")
        assert sft["phase"] == "Running" and sft["attempts"] == attempt + 1 and sft["preemptions"] == attempt
        assert event_reasons(outcome) == [("Warning", "StagePreempted")]
    # A real failure still counts: with retries 0 the stage fails.
    _, body = step(body, job("demo-sft-3", "Failed"))
    assert stage_of(body, "sft")["phase"] == "Failed"


def test_configuration_error_is_not_retried() -> None:
    _, body = step(body_of(base_run("demo")))
    bad = result("sft").model_copy(update={"status": "failed", "exit_code": 2, "message": "model.name: not merged"})
    observed = {"demo-sft-1": dataclasses.replace(job("demo-sft-1", "Failed")["demo-sft-1"], result=bad)}
    outcome, after = step(body, observed)
    sft = stage_of(after, "sft")
    assert sft["phase"] == "Failed" and "configuration error: not retried" in sft["message"]
    assert creates(outcome) == [] and after["status"]["phase"] == "Failed"


# --- the memory estimate at creation: a warning, never a block ------------------------------------


def test_a_stage_that_will_not_fit_its_gpu_warns_but_still_starts() -> None:
    run = base_run(
        model={"name": "meta-llama/Llama-2-70b-hf", "dtype": "bfloat16"},
        pipeline=["sft"],
        reward=None,
        ppo=None,
        placement={"gpusPerWorker": 1, "nodePool": {"accelerator": "nvidia-a100-40gb"}},
        sft={"dataset": {"source": "d"}, "lora": {"enabled": False}},
    )
    run["spec"] = {k: v for k, v in run["spec"].items() if v is not None}
    outcome, after = step(body_of(run))
    assert ("Warning", "InsufficientGPUMemory") in event_reasons(outcome)
    warning = next(a.body for a in outcome.events if a.body["reason"] == "InsufficientGPUMemory")
    assert warning["message"].startswith("sft: needs about") and "nvidia-a100-40gb" in warning["message"]
    gpu = condition(after, "GPUMemory")
    assert gpu["status"] == "False" and gpu["reason"] == "InsufficientGPUMemory"
    assert any(name.startswith("demo-sft") for name in creates(outcome))  # the stage starts anyway
    # later passes keep the condition and say nothing again
    again, later = step(after, job(stage_of(after, "sft")["jobName"], "Running"))
    assert condition(later, "GPUMemory") == gpu and not again.events


def test_a_run_that_fits_gets_no_gpu_memory_condition() -> None:
    outcome, after = step(body_of(base_run()))
    assert "InsufficientGPUMemory" not in [r for _, r in event_reasons(outcome)]
    assert all(c["type"] != "GPUMemory" for c in after["status"]["conditions"])
