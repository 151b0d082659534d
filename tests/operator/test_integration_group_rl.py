"""GRPO and RLOO runs through the real kopf operator (kmock): the operator is stage-agnostic, so
a new stage is one more PyTorchJob running `rlhf-train <stage>` with its planned config."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from .conftest import NAMESPACE, Cluster, OperatorThread, base_run
from .test_integration import run_through

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


def _config(cluster: Cluster, name: str) -> dict[str, Any]:
    configmap = next(c for c in cluster.kmock.live("v1/configmaps", NAMESPACE) if c["metadata"]["name"] == name)
    config: dict[str, Any] = yaml.safe_load(next(iter(configmap["data"].values())))
    return config


@pytest.mark.parametrize(
    ("stage", "pipeline", "rewards", "reward_model"),
    [
        ("grpo", ["sft", "reward", "grpo"], None, "/workspace/{run}/reward/merged"),
        ("rloo", ["sft", "rloo"], [{"type": "builtin", "builtin": "exactMatch", "column": "answer"}], None),
    ],
)
async def test_group_rl_run_succeeds(
    cluster: Cluster,
    operator: OperatorThread,
    stage: str,
    pipeline: list[str],
    rewards: list[dict[str, Any]] | None,
    reward_model: str | None,
) -> None:
    name = f"{stage}-demo"
    run = base_run(name, pipeline=pipeline)
    del run["spec"]["ppo"]
    if "reward" not in pipeline:
        del run["spec"]["reward"]
    run["spec"][stage] = {"dataset": {"source": "builtin:arithmetic"}, **({"rewards": rewards} if rewards else {})}
    await cluster.apply(run)
    await run_through(cluster, name, pipeline)
    status = cluster.status(name)
    assert [(s["name"], s["phase"]) for s in status["stages"]] == [(s, "Succeeded") for s in pipeline]
    assert sorted(cluster.job_names()) == sorted(f"{name}-{s}-1" for s in pipeline)
    config = _config(cluster, f"{name}-{stage}-config")
    assert config["stage"] == stage and config["model"]["name"] == f"/workspace/{name}/sft/merged"
    assert config.get("rewardModel", {}).get("name") == (reward_model.format(run=name) if reward_model else None)
    assert [s["type"] for s in config[stage]["rewards"]] == [s["type"] for s in rewards or [{"type": "rewardModel"}]]
