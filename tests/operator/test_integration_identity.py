"""Run identity and non-overlapping attempts with the real kopf operator against kmock."""

from __future__ import annotations

from typing import Any

import pytest
from rlhf_api import reasons
from rlhf_api.identity import StageIdentity
from rlhf_api.naming import labels
from rlhf_api.result import StageResult

from .conftest import NAMESPACE, Cluster, OperatorThread, base_run, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


def reasons_posted(cluster: Cluster) -> list[str]:
    return [e["reason"] for e in cluster.kmock.live("v1/events", NAMESPACE)]


async def test_recreated_run_does_not_take_the_old_runs_zero_step_success(
    cluster: Cluster, operator: OperatorThread
) -> None:
    """Re-create `demo` with another dataset. The sft job's trainer read what the deleted run
    left (its ConfigMap, its checkpoint-600 on the kept volume): it resumed at the last step,
    trained 0 steps and reported success. On the old code sft was Succeeded and reward started;
    the result's identity (the old run's uid) now fails the stage, naming the mismatch."""
    run = base_run()
    run["spec"]["sft"]["dataset"] = {"source": "data/another.jsonl"}
    await cluster.apply(run)
    await wait_for(lambda: "demo-sft-1" in cluster.job_names(), what="sft-1")
    old = StageIdentity(run_uid="uid-of-the-deleted-demo", config_hash="0123456789abcdef")
    output = "/workspace/demo/sft"
    zero_steps = StageResult(
        stage="sft",
        status="succeeded",
        output_path=output,
        merged_path=f"{output}/merged",
        steps=600,
        planned_steps=600,
        resumed_from_step=600,
        identity=old,
    )
    await cluster.set_job_condition("demo-sft-1", "Running")
    await cluster.create_master_pod("demo-sft-1", zero_steps)
    await cluster.set_job_condition("demo-sft-1", "Succeeded", "PyTorchJob succeeded")
    await wait_for(lambda: cluster.stage("demo", "sft").get("phase") in ("Failed", "Succeeded"), what="sft outcome")
    sft = cluster.stage("demo", "sft")
    assert sft["phase"] == "Failed", sft
    assert "it belongs to another run (uid uid-of-the-deleted-demo" in sft["message"]
    assert cluster.status("demo")["phase"] == "Failed"
    assert "demo-reward-1" not in cluster.job_names()
    await wait_for(lambda: reasons.STAGE_IDENTITY_MISMATCH in reasons_posted(cluster), what="the warning event")


async def test_a_spec_edit_to_a_finished_stage_stalls_the_run_until_reverted(
    cluster: Cluster, operator: OperatorThread
) -> None:
    await cluster.apply(base_run())
    await wait_for(lambda: "demo-sft-1" in cluster.job_names(), what="sft-1")
    await cluster.finish_stage("demo-sft-1")
    await wait_for(lambda: "demo-reward-1" in cluster.job_names(), what="reward-1")
    await cluster.patch_run("demo", {"spec": {"sft": {"training": {"learningRate": 0.001}}}})

    def stalled() -> dict[str, Any] | None:
        found = [c for c in cluster.status("demo").get("conditions", []) if c["type"] == "Stalled"]
        return found[0] if found and found[0]["status"] == "True" else None

    condition = await wait_for(stalled, what="Stalled")
    assert condition["reason"] == reasons.SPEC_CHANGE_REJECTED
    # named from the config sft started with (its ConfigMap), as `rlhf run` names them
    assert "sft.training.learningRate: 0.0002 -> 0.001" in condition["message"], condition["message"]
    await cluster.patch_run("demo", {"spec": {"sft": {"training": None}}})  # reverted
    await wait_for(lambda: stalled() is None, what="no longer Stalled")
    await cluster.finish_stage("demo-reward-1")
    await wait_for(lambda: "demo-ppo-1" in cluster.job_names(), what="ppo-1")


async def test_the_next_attempt_waits_until_no_pod_of_the_previous_one_is_left(
    cluster: Cluster, operator: OperatorThread
) -> None:
    """The failed attempt's pod is still in its termination grace period (saving a checkpoint):
    on the old code attempt 2 started at once (retryBackoffSeconds 0) beside it."""
    await cluster.apply(base_run())
    await wait_for(lambda: "demo-sft-1" in cluster.job_names(), what="sft-1")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "demo-sft-1-master-0", "namespace": NAMESPACE, "labels": labels("demo", "sft", 1)},
        "spec": {"containers": [{"name": "pytorch", "image": "x"}]},
        "status": {"phase": "Running"},
    }
    await cluster._call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
    await cluster.fail_stage("demo-sft-1", "node lost")
    message = "attempt 2 waits until no pod of attempt 1 is left (demo-sft-1-master-0)"
    await wait_for(lambda: cluster.stage("demo", "sft").get("message") == message, what="waiting message")
    assert "demo-sft-2" not in cluster.job_names()
    await wait_for(lambda: reasons.PREVIOUS_ATTEMPT_TERMINATING in reasons_posted(cluster), what="the event")
    await cluster.delete_pod("demo-sft-1-master-0")  # its grace period ended
    await wait_for(lambda: "demo-sft-2" in cluster.job_names(), timeout=15, what="sft-2 once the pod is gone")
