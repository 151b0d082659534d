"""RL health guards: per-stage limits on the numbers a stage reports while it trains. Pure.

The same `evaluate` runs in the operator (on the events read from the Master pod's log) and in
`rlhf run` (on the events of the stage process), so a guard trips at the same number in both.
A non-finite loss always trips, with or without a `guards` section: a NaN or infinite loss means
the weights are already broken, and every later step trains on garbage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from .camel_model import CamelModel

GuardAction = Literal["warn", "stop"]

# The event keys each guard reads. PPO (the project's engine) and TRL's GRPO/RLOO report `kl` and
# `reward_std`; the losses are `loss` (HF Trainer steps) or `policy_loss`/`value_loss` (PPO).
KL_KEYS = ("kl",)
REWARD_STD_KEYS = ("reward_std",)
LOSS_KEYS = ("loss", "policy_loss", "value_loss")


class Guards(CamelModel):
    """Limits checked on every progress event of the stage; a tripped one gives a Warning event
    naming the metric and its value, and the run's condition Healthy=False."""

    max_kl: float | None = Field(
        default=None, gt=0, alias="maxKL", description="Trip when the reported KL to the reference policy exceeds this."
    )
    min_reward_std: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Trip when the standard deviation of the rewards in a batch falls below this (reward collapse: "
            "every sample scores the same, so the policy has nothing left to learn from)."
        ),
    )
    action: GuardAction = Field(
        default="warn",
        description=(
            "warn: a Warning and Healthy=False, training goes on. stop: the attempt is ended, the stage fails "
            "without a retry and keeps its checkpoints. A non-finite loss trips with this action too."
        ),
    )


@dataclass(frozen=True)
class Trip:
    """One guard that tripped on one event."""

    metric: str
    value: float
    limit: str  # e.g. "> maxKL 0.5", "non-finite"
    action: GuardAction

    @property
    def text(self) -> str:
        return f"{self.metric}={self.value:.4g} ({self.limit})"


def _number(event: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, float] | None:
    for key in keys:
        value = event.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return key, float(value)
    return None


def evaluate(guards: Guards | None, event: Mapping[str, Any]) -> list[Trip]:
    """The guards that one progress event trips (empty: healthy, or nothing to judge)."""
    action: GuardAction = guards.action if guards is not None else "warn"
    trips: list[Trip] = []
    for key in LOSS_KEYS:
        value = event.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            trips.append(Trip(key, value, "non-finite", action))
    if guards is None:
        return trips
    kl = _number(event, KL_KEYS)
    if guards.max_kl is not None and kl is not None and (kl[1] > guards.max_kl or not math.isfinite(kl[1])):
        trips.append(Trip(kl[0], kl[1], f"> maxKL {guards.max_kl:g}", action))
    std = _number(event, REWARD_STD_KEYS)
    if guards.min_reward_std is not None and std is not None and std[1] < guards.min_reward_std:
        trips.append(Trip(std[0], std[1], f"< minRewardStd {guards.min_reward_std:g}", action))
    return trips


def describe(trips: list[Trip]) -> str:
    return "guard tripped: " + ", ".join(t.text for t in trips)
