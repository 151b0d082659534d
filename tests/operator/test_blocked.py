"""Foreign jobs and refused writes in the pure state machine (reconcile/blocked.py), table-driven."""

from __future__ import annotations

from typing import Any

import pytest
from rlhf_api.naming import STAGE_JOB_FINALIZER
from rlhf_operator.observed_job import ObservedJob
from rlhf_operator.reconcile import Create, PostEvent, ReleaseJob, reconcile
from rlhf_operator.reconcile.blocked import Blocked
from rlhf_operator.settings import OperatorSettings

from .conftest import base_run
from .test_reconcile import NOW, body_of, creates

# Without the run's NetworkPolicy (test_run_isolation.py covers it): the table lists the stage objects.
SETTINGS = OperatorSettings(metrics_port=0, stage_network_policy=False)
HELD = (STAGE_JOB_FINALIZER,)


def stalled(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Stalled")


@pytest.mark.parametrize(
    ("blocked", "created", "stall_reason", "released", "volume_claim"),
    [
        (Blocked(), ["demo-data", "demo-sft-config", "demo-sft-1"], None, [], "demo-data"),
        # An orphaned job of an earlier run of this name: not adopted, the stage waits.
        (
            Blocked(foreign={"demo-sft-1": ObservedJob("demo-sft-1", "Succeeded", finalizers=HELD)}),
            ["demo-data"],
            "JobConflict",
            [],
            "demo-data",
        ),
        # A stale uid's job: same.
        (
            Blocked(foreign={"demo-sft-1": ObservedJob("demo-sft-1", "Running", owner_uid="old")}),
            ["demo-data"],
            "JobConflict",
            [],
            "demo-data",
        ),
        # A stale job being deleted (replace --force): released, then created on a later pass.
        (
            Blocked(
                foreign={
                    "demo-sft-1": ObservedJob("demo-sft-1", "Running", owner_uid="old", deleting=True, finalizers=HELD)
                }
            ),
            ["demo-data"],
            None,
            ["demo-sft-1"],
            "demo-data",
        ),
        # The job create refused (a quota): no attempt, Stalled with the server's words.
        (
            Blocked(refused={"demo-sft-1": "exceeded quota"}),
            ["demo-data", "demo-sft-config"],
            "CreateRefused",
            [],
            "demo-data",
        ),
        # The config refused: no job either.
        (Blocked(refused={"demo-sft-config": "too large"}), ["demo-data"], "CreateRefused", [], "demo-data"),
        # The claim refused: nothing that would mount it, and the claim is not recorded.
        (Blocked(refused={"demo-data": "invalid"}), [], "CreateRefused", [], None),
    ],
)
def test_first_pass_when_blocked(
    blocked: Blocked, created: list[str], stall_reason: str | None, released: list[str], volume_claim: str | None
) -> None:
    outcome = reconcile(body_of(base_run("demo")), {}, NOW, SETTINGS, blocked=blocked)
    status = outcome.new_status
    assert creates(outcome) == created
    assert [a.name for a in outcome.actions if isinstance(a, ReleaseJob)] == released
    assert status.get("volumeClaim") == volume_claim
    sft = status["stages"][0]
    if "demo-sft-1" not in created:
        assert sft["phase"] == "Pending" and sft["attempts"] == 0
    condition = stalled(status)
    if stall_reason is None:
        assert condition["status"] == "False"
    else:
        assert condition["status"] == "True" and condition["reason"] == stall_reason
        warnings = [a.body for a in outcome.actions if isinstance(a, PostEvent) and a.body["type"] == "Warning"]
        assert warnings and warnings[0]["reason"] == stall_reason
        assert status["message"] == condition["message"]


def test_a_stall_is_a_fixed_point() -> None:
    """The same stall on the next pass changes nothing: no patch, no second Warning."""
    blocked = Blocked(refused={"demo-sft-1": "exceeded quota"})
    body = body_of(base_run("demo"))
    first = reconcile(body, {}, NOW, SETTINGS, blocked=blocked)
    body["status"] = first.new_status
    again = reconcile(body, {}, NOW.replace(minute=5), SETTINGS, blocked=blocked)
    assert again.status_patch == {}
    assert not [a for a in again.actions if isinstance(a, PostEvent)]
    assert [a.name for a in again.actions if isinstance(a, Create)] == ["demo-sft-config"]
