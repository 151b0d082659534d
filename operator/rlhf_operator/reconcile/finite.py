"""Non-finite metrics in a stage result (issue 16, item 1). Pure.

A real API server refuses a JSON body with NaN or Infinity (400), so nothing non-finite may reach
the run's status. The choice made here:
- a non-finite *training loss* means the stage diverged (e.g. an fp16 overflow): the stage fails,
  not retried, because a retry resumes from the checkpoint the diverged run wrote (or re-runs the
  same config and seed) and diverges again; the user changes the config (learning rate, dtype);
- any other non-finite metric (an eval score, a KL, a gradient norm) is dropped from the status
  with a Warning naming it; the stage's outcome stands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def is_training_loss(name: str) -> bool:
    """`loss`, `train_loss`, `ppo/loss`, `policy_loss`...: a loss that is not an evaluation's."""
    leaf = name.rsplit("/", 1)[-1].lower()
    return leaf.endswith("loss") and not leaf.startswith("eval") and not name.lower().startswith("eval")


def split_metrics(metrics: Mapping[str, float]) -> tuple[dict[str, float], list[str]]:
    """(the finite metrics, the names of the non-finite ones, sorted)."""
    finite = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
    return finite, sorted(k for k in metrics if k not in finite)


def diverged(non_finite: list[str]) -> list[str]:
    """The non-finite metrics that are training losses: the stage diverged when there is one."""
    return [name for name in non_finite if is_training_loss(name)]
