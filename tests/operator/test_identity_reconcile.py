"""The state machine and stage identity (reconcile/identity_check.py) and non-overlapping
attempts (reconcile/attempts.py): pure, table-driven."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from rlhf_api import reasons
from rlhf_api.identity import StageIdentity
from rlhf_api.result import StageResult
from rlhf_api.validation import parse_run
from rlhf_operator.observed_job import ObservedJob
from rlhf_operator.plan import plan
from rlhf_operator.reconcile import Create, reconcile
from rlhf_operator.reconcile.attempts import RECHECK_SECONDS, pods_left, previous_attempts
from rlhf_operator.reconcile.status_store import load_status

from .conftest import base_run
from .test_reconcile import NOW, SETTINGS, body_of, condition, creates, stage_of, step


def planned_identity(body: dict[str, Any], stage: str) -> StageIdentity:
    run = parse_run(body)
    found = next(p for p in plan(run, run.spec.storage.mount_path) if p.name == stage)
    assert found.config is not None and found.config.identity is not None
    return found.config.identity


def sft_result(identity: StageIdentity | None, **fields: Any) -> StageResult:
    out = "/workspace/demo/sft"
    return StageResult(
        stage="sft", status="succeeded", output_path=out, merged_path=f"{out}/merged", identity=identity, **fields
    )


def started() -> dict[str, Any]:
    """demo after its first pass: sft's job demo-sft-1 created."""
    body = body_of(base_run())
    _, body = step(body)
    return body


def test_the_stage_records_the_config_hash_it_started_with() -> None:
    body = started()
    assert stage_of(body, "sft")["configHash"] == planned_identity(body, "sft").config_hash
    assert "configHash" not in stage_of(body, "reward")  # not started yet


OTHER_RUN = StageIdentity(run_uid="uid-of-the-deleted-demo", config_hash="0123456789abcdef")
# (case, the result's identity (None: the planned one), the result has none, sft phase after)
RESULT_CASES: list[tuple[str, StageIdentity | None, bool, str]] = [
    ("this stage's result", None, False, "Succeeded"),
    ("an older trainer image: no identity", None, True, "Succeeded"),
    ("another run's (re-created demo, the old ConfigMap)", OTHER_RUN, False, "Failed"),
]


@pytest.mark.parametrize(("identity", "none", "phase"), [c[1:] for c in RESULT_CASES], ids=[c[0] for c in RESULT_CASES])
def test_a_result_counts_only_with_this_stages_identity(identity: StageIdentity | None, none: bool, phase: str) -> None:
    body = started()
    mine = planned_identity(body, "sft")
    found = None if none else (identity or mine)
    # Resumed at its last step: trained 0 steps, "succeeded" (what a stale checkpoint gave).
    result = sft_result(found, steps=600, planned_steps=600, resumed_from_step=600)
    jobs = {"demo-sft-1": ObservedJob(name="demo-sft-1", state="Succeeded", result=result)}
    outcome, after = step(body, jobs)
    sft = stage_of(after, "sft")
    assert sft["phase"] == phase
    if phase == "Failed":
        words = "its result is not this stage's: it belongs to another run (uid uid-of-the-deleted-demo"
        assert words in sft["message"]
        assert sft["attempts"] == 1 and "retryAfter" not in sft  # not retried: the same config again
        assert after["status"]["phase"] == "Failed" and not creates(outcome)
        assert any(a.body["reason"] == reasons.STAGE_IDENTITY_MISMATCH for a in outcome.events)
    else:
        assert creates(outcome) == ["demo-reward-config", "demo-reward-1"]


def test_a_failed_job_with_another_config_s_result_fails_the_stage() -> None:
    body = started()
    mine = planned_identity(body, "sft")
    other = StageIdentity(run_uid=mine.run_uid, config_hash="ffffffffffffffff")
    preempted = StageResult(
        stage="sft", status="failed", output_path="/o", preempted=True, exit_code=143, identity=other
    )
    _, after = step(body, {"demo-sft-1": ObservedJob(name="demo-sft-1", state="Failed", result=preempted)})
    assert stage_of(after, "sft")["phase"] == "Failed"
    assert "another config of this stage (hash ffffffffffffffff" in stage_of(after, "sft")["message"]


def _finished_sft() -> dict[str, Any]:
    body = started()
    ok = sft_result(planned_identity(body, "sft"))
    _, body = step(body, {"demo-sft-1": ObservedJob(name="demo-sft-1", state="Succeeded", result=ok)})
    assert stage_of(body, "sft")["phase"] == "Succeeded" and stage_of(body, "reward")["phase"] == "Running"
    return body


def _edit(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    edited = copy.deepcopy(body)
    node = edited["spec"]
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    edited["metadata"]["generation"] += 1
    return edited


# (case, spec path, value, rejected): a started stage's trainer config is fixed; the rest is not.
EDIT_CASES: list[tuple[str, str, Any, bool]] = [
    ("finished sft's learning rate", "sft.training", {"learningRate": 0.001}, True),
    ("finished sft's dataset", "sft.dataset", {"source": "data/other.jsonl"}, True),
    ("running reward's max length", "reward.training", {"maxLength": 128}, True),
    ("ppo, not started yet", "ppo.training", {"steps": 7}, False),
    ("sft's placement (not in the identity)", "sft.placement", {"shmSize": "2Gi"}, False),
    ("retries", "reward.retries", 5, False),
]


@pytest.mark.parametrize(("path", "value", "rejected"), [c[1:] for c in EDIT_CASES], ids=[c[0] for c in EDIT_CASES])
def test_an_edit_to_a_started_stage_s_config_is_rejected(path: str, value: Any, rejected: bool) -> None:
    body = _finished_sft()
    reward_job = {"demo-reward-1": ObservedJob(name="demo-reward-1", state="Running")}
    edited = _edit(body, path, value)
    outcome, after = step(edited, reward_job)
    stalled = condition(after, "Stalled")
    if not rejected:
        assert stalled["status"] == "False" and after["status"]["phase"] == "Running"
        return
    assert stalled["status"] == "True" and stalled["reason"] == reasons.SPEC_CHANGE_REJECTED
    stage = path.split(".")[0]
    assert f"started stage(s) {stage} (config " in after["status"]["message"]
    assert after["status"]["phase"] == "Running" and not creates(outcome)  # stalled, not failed
    assert [a.body["reason"] for a in outcome.events] == [reasons.SPEC_CHANGE_REJECTED]
    # Reverted: the run carries on from where it was.
    reverted = copy.deepcopy(after)
    reverted["spec"] = body["spec"]
    _, back = step(reverted, reward_job)
    assert condition(back, "Stalled")["status"] == "False" and back["status"]["phase"] == "Running"


# --- attempts never overlap ------------------------------------------------------------------


def _failed_once() -> dict[str, Any]:
    run = base_run()
    run["spec"]["sft"]["retryBackoffSeconds"] = 30
    _, body = step(body_of(run))
    _, body = step(body, {"demo-sft-1": ObservedJob(name="demo-sft-1", state="Failed", message="OOMKilled")})
    assert stage_of(body, "sft")["phase"] == "Retrying"
    return body


@pytest.mark.parametrize(
    ("left", "starts"),
    [((), True), (("demo-sft-1-master-0",), False), (("demo-sft-1-master-0", "demo-sft-1-worker-0"), False)],
)
def test_the_next_attempt_waits_for_the_previous_attempts_pods(left: tuple[str, ...], starts: bool) -> None:
    body = _failed_once()
    later = NOW + timedelta(seconds=60)  # past the backoff
    outcome = reconcile(body, {}, later, SETTINGS, lingering={("sft", 1): left})
    sft = next(s for s in outcome.status.stages if s.name == "sft")
    if starts:
        assert [a.name for a in outcome.actions if isinstance(a, Create)] == ["demo-sft-2"]
        return
    assert not [a for a in outcome.actions if isinstance(a, Create)] and sft.phase == "Retrying"
    assert sft.message == f"attempt 2 waits until no pod of attempt 1 is left ({', '.join(left)})"
    assert outcome.requeue_after == RECHECK_SECONDS
    assert [a.body["reason"] for a in outcome.events] == [reasons.PREVIOUS_ATTEMPT_TERMINATING]
    # Seen again with the same pods: no new event.
    body["status"] = outcome.new_status
    again = reconcile(body, {}, later, SETTINGS, lingering={("sft", 1): left})
    assert not again.events and not again.status_patch


def test_a_preempted_attempt_waits_for_its_pods_in_the_pass_that_sees_it() -> None:
    """A preemption (and a zero backoff) retries in the same pass: its pods are asked for then."""
    body = started()
    preempted = StageResult(stage="sft", status="failed", output_path="/o", preempted=True, exit_code=143)
    jobs = {"demo-sft-1": ObservedJob(name="demo-sft-1", state="Failed", result=preempted)}
    assert previous_attempts(load_status(body["status"]), jobs) == [("sft", 1)]
    assert previous_attempts(load_status(body["status"]), {"demo-sft-1": ObservedJob("demo-sft-1", "Running")}) == []
    outcome = reconcile(body, jobs, NOW, SETTINGS, lingering={("sft", 1): ("demo-sft-1-master-0",)})
    assert not [a for a in outcome.actions if isinstance(a, Create)]
    sft = next(s for s in outcome.status.stages if s.name == "sft")
    assert sft.phase == "Retrying" and sft.preemptions == 1 and "waits until no pod of attempt 1" in (sft.message or "")
    body["status"] = outcome.new_status
    gone = reconcile(body, {}, NOW, SETTINGS, lingering={("sft", 1): ()})
    assert [a.name for a in gone.actions if isinstance(a, Create)] == ["demo-sft-2"]


def _pod(name: str, phase: str | None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name} | ({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})
    return {"metadata": meta, "status": {"phase": phase} if phase else {}}


@pytest.mark.parametrize(
    ("pods", "left"),
    [
        ([], ()),
        ([_pod("a", "Running")], ("a",)),
        ([_pod("a", "Running", deleting=True)], ("a",)),  # in its grace period: may still save
        ([_pod("a", "Pending")], ("a",)),
        ([_pod("a", None)], ("a",)),
        ([_pod("a", "Failed"), _pod("b", "Succeeded")], ()),
        ([_pod("b", "Running"), _pod("a", "Failed"), _pod("c", "Unknown")], ("b", "c")),
    ],
)
def test_pods_left_are_those_not_terminated(pods: list[dict[str, Any]], left: tuple[str, ...]) -> None:
    assert pods_left(pods) == left
