"""Which non-finite metrics fail a stage (training losses) and which are only dropped. Pure."""

from __future__ import annotations

import math

import pytest
from rlhf_api.status import StageStatus
from rlhf_operator.reconcile.finite import diverged, is_training_loss, split_metrics


@pytest.mark.parametrize(
    ("name", "loss"),
    [
        ("loss", True),
        ("train_loss", True),
        ("ppo/loss", True),
        ("policy_loss", True),
        ("eval_loss", False),
        ("eval/loss", False),
        ("reward_mean", False),
        ("grad_norm", False),
        ("kl", False),
    ],
)
def test_training_loss_names(name: str, loss: bool) -> None:
    assert is_training_loss(name) is loss


@pytest.mark.parametrize(
    ("metrics", "kept", "dropped", "diverges"),
    [
        ({"train_loss": 0.5}, {"train_loss": 0.5}, [], []),
        ({"train_loss": math.nan, "kl": 0.1}, {"kl": 0.1}, ["train_loss"], ["train_loss"]),
        ({"eval_loss": math.inf, "loss": 1.0}, {"loss": 1.0}, ["eval_loss"], []),
        ({"reward": -math.inf, "loss": math.nan}, {}, ["loss", "reward"], ["loss"]),
    ],
)
def test_split_metrics(
    metrics: dict[str, float], kept: dict[str, float], dropped: list[str], diverges: list[str]
) -> None:
    finite, non_finite = split_metrics(metrics)
    assert finite == kept
    assert non_finite == dropped
    assert diverged(non_finite) == diverges


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_the_status_refuses_non_finite_metrics(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        StageStatus(name="sft", metrics={"loss": value})
