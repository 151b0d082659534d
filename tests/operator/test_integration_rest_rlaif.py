"""The operator runs ReST and RLAIF pipelines like any other: one job per stage, in order, with
the rlaif stage's pairs wired into the next stage's config (kmock emulator, as test_integration)."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import NAMESPACE, Cluster, OperatorThread, base_run
from .test_integration import run_through

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]

QUICK = {"retries": 1, "retryBackoffSeconds": 0}
PROMPTS = {"source": "builtin:arithmetic"}


def config_text(cluster: Cluster, name: str) -> str:
    configmap = next(c for c in cluster.kmock.live("v1/configmaps", NAMESPACE) if c["metadata"]["name"] == name)
    return str(next(iter(configmap["data"].values())))


async def test_rest_pipeline(cluster: Cluster, operator: OperatorThread) -> None:
    run: dict[str, Any] = base_run("rest-demo", pipeline=["sft", "reward", "rest"])
    del run["spec"]["ppo"]
    run["spec"]["rest"] = {"dataset": PROMPTS, "growSteps": 2, **QUICK}
    await cluster.apply(run)
    await run_through(cluster, "rest-demo", ["sft", "reward", "rest"])
    assert cluster.job_names() == ["rest-demo-rest-1", "rest-demo-reward-1", "rest-demo-sft-1"]
    rest = config_text(cluster, "rest-demo-rest-config")
    assert "rewardModel:\n  name: /workspace/rest-demo/reward/merged" in rest
    assert "growSteps: 2" in rest


async def test_rlaif_pipeline(cluster: Cluster, operator: OperatorThread) -> None:
    run: dict[str, Any] = base_run("rlaif-demo", pipeline=["sft", "rlaif", "dpo"])
    del run["spec"]["reward"], run["spec"]["ppo"]
    run["spec"]["rlaif"] = {"dataset": PROMPTS, "judge": {"name": "org/judge"}, **QUICK}
    run["spec"]["dpo"] = QUICK  # no dataset: it trains on the rlaif stage's pairs
    await cluster.apply(run)
    await run_through(cluster, "rlaif-demo", ["sft", "rlaif", "dpo"])
    assert cluster.job_names() == ["rlaif-demo-dpo-1", "rlaif-demo-rlaif-1", "rlaif-demo-sft-1"]
    dpo = config_text(cluster, "rlaif-demo-dpo-config")
    assert "source: /workspace/rlaif-demo/rlaif/preferences.jsonl" in dpo
    assert "evalTask:\n  source: builtin:arithmetic" in dpo
    assert [s["phase"] for s in cluster.status("rlaif-demo")["stages"]] == ["Succeeded"] * 3
