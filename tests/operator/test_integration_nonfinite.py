"""Nothing non-finite reaches the API (issue 16, item 1).

The emulator answers 400 to a body with NaN or Infinity, as a real API server's JSON decoder
does. A stage whose result carries a non-finite training loss fails as diverged (not retried);
another non-finite metric is dropped from the status with a Warning naming it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from .conftest import NAMESPACE, Cluster, OperatorThread, base_run, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


def warnings(cluster: Cluster) -> list[dict[str, Any]]:
    return [e for e in cluster.kmock.live("v1/events", NAMESPACE) if e.get("type") == "Warning"]


async def test_emulator_refuses_non_finite_bodies(cluster: Cluster) -> None:
    path = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
    text = '{"metadata": {"name": "x"}, "data": {"a": "b"}, "n": NaN}'
    async with cluster.kmock.request("POST", path, data=text, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400


async def test_nan_training_loss_fails_the_stage_as_diverged(cluster: Cluster, operator: OperatorThread) -> None:
    await cluster.apply(base_run("demo"))
    await wait_for(lambda: "demo-sft-1" in cluster.job_names(), what="first job")
    await cluster.finish_stage("demo-sft-1", metrics={"train_loss": math.nan, "grad_norm": 1.5})
    await wait_for(lambda: cluster.status("demo").get("phase") == "Failed", what="run Failed")
    stage = cluster.stage("demo", "sft")
    assert stage["phase"] == "Failed"
    assert stage["attempts"] == 1  # not retried: the same config diverges again
    assert "train_loss" in stage["message"] and "diverged" in stage["message"]
    assert stage.get("metrics") == {"grad_norm": 1.5}
    json.dumps(cluster.status("demo"), allow_nan=False)  # nothing non-finite was stored
    assert cluster.job_names() == ["demo-sft-1"]  # the next stage never started
    assert any("train_loss" in e["message"] for e in warnings(cluster))


async def test_other_non_finite_metric_is_dropped_with_a_warning(cluster: Cluster, operator: OperatorThread) -> None:
    await cluster.apply(base_run("demo"))
    await wait_for(lambda: "demo-sft-1" in cluster.job_names(), what="first job")
    await cluster.finish_stage("demo-sft-1", metrics={"train_loss": 0.4, "eval_reward": math.inf})
    await wait_for(lambda: cluster.stage("demo", "reward").get("phase") == "Running", what="the next stage")
    stage = cluster.stage("demo", "sft")
    assert stage["phase"] == "Succeeded"
    assert stage["metrics"] == {"train_loss": 0.4}
    await wait_for(
        lambda: any("eval_reward" in e["message"] for e in warnings(cluster)), what="a Warning naming eval_reward"
    )
