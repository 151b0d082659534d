"""Pure parts of ReST: the step order, the rising threshold, the kept samples, the Grow prompts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rlhf_api.rest_config import ThresholdMode


@dataclass(frozen=True)
class Step:
    grow: int  # 1-based
    improve: int  # 1-based, within its Grow step

    @property
    def name(self) -> str:
        return f"grow-{self.grow}-improve-{self.improve}"


def steps(grow_steps: int, improve_steps: int) -> list[Step]:
    """Every Improve step in order: G Grow steps, each followed by its I Improve steps."""
    return [Step(g, i) for g in range(1, grow_steps + 1) for i in range(1, improve_steps + 1)]


def threshold(rewards: Sequence[float], mode: ThresholdMode, value: float) -> float:
    """The reward a sample needs to be kept: the value itself, or that percentile of the Grow
    step's rewards (linear interpolation, as numpy.percentile)."""
    if mode == "absolute":
        return value
    if not rewards:
        return float("inf")
    return float(np.percentile(np.asarray(rewards, dtype=float), value))


def kept(rewards: Sequence[float], limit: float) -> list[int]:
    """Indices of the samples scoring at least `limit` (ties at a percentile are all kept)."""
    return [i for i, r in enumerate(rewards) if r >= limit]


def grow_prompts(count: int, grow: int, per_grow: int | None) -> list[int]:
    """Prompt indices for a Grow step: all of them, or the next `per_grow` (wrapping around),
    so that successive Grow steps see different prompts."""
    if per_grow is None or per_grow >= count:
        return list(range(count))
    start = (grow - 1) * per_grow
    return [(start + k) % count for k in range(per_grow)]
