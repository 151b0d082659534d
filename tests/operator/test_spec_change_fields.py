"""A rejected spec edit names each changed field with its old and new value (issue 23, item 8),
from the config the stage started with (its ConfigMap), as `rlhf run` names them."""

from __future__ import annotations

from typing import Any

import yaml
from rlhf_api import reasons
from rlhf_operator.manifests.configmap import started_config
from rlhf_operator.observed_job import ObservedJob
from rlhf_operator.reconcile import Create, reconcile
from rlhf_operator.reconcile.status_store import load_status

from .conftest import base_run
from .test_identity_reconcile import _edit, _finished_sft, planned_identity, sft_result
from .test_reconcile import NOW, SETTINGS, body_of, step

REWARD_JOB = {"demo-reward-1": ObservedJob(name="demo-reward-1", state="Running")}


def started_configs() -> dict[str, dict[str, Any]]:
    """The ConfigMaps the passes up to reward's start created, as the shell reads them back."""
    first, body = step(body_of(base_run("demo")))
    ok = sft_result(planned_identity(body, "sft"))
    second, _ = step(body, {"demo-sft-1": ObservedJob(name="demo-sft-1", state="Succeeded", result=ok)})
    found = {}
    for action in first.actions + second.actions:
        if isinstance(action, Create) and action.api.plural == "configmaps":
            config = started_config(action.body)
            assert config is not None
            found[str(config["stage"])] = config
    return found


def test_a_rejected_edit_names_each_changed_field_with_old_and_new() -> None:
    body = _finished_sft()
    configs = started_configs()
    old_rate = configs["sft"]["sft"]["training"]["learningRate"]
    edited = _edit(body, "sft.training", {"learningRate": 0.0007, "epochs": 3})
    first = reconcile(edited, REWARD_JOB, NOW, SETTINGS)
    assert first.config_reads == ["sft", "reward"]  # reward is trained from sft: its identity moved too
    outcome = reconcile(edited, REWARD_JOB, NOW, SETTINGS, started_configs=configs)
    message = load_status(outcome.new_status).message or ""
    assert f"sft.training.learningRate: {old_rate} -> 0.0007" in message, message
    assert "sft.training.epochs: 1.0 -> 3.0" in message
    assert "reward (trained from sft, which changed)" in message
    assert [a.body["reason"] for a in outcome.events] == [reasons.SPEC_CHANGE_REJECTED]
    assert outcome.config_reads == []


def test_an_unreadable_configmap_gives_no_config() -> None:
    for configmap in (None, {}, {"data": {"config.yaml": "{{{"}}, {"data": {"config.yaml": "- a list"}}, {"data": 3}):
        assert started_config(configmap) is None
    assert started_config({"data": {"config.yaml": yaml.safe_dump({"a": 1})}}) == {"a": 1}
