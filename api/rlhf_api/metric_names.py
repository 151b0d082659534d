"""Which of a stage's numbers people see, in which order: one contract, read from the registry.

Each stage kind declares its own names on its StageKind (rlhf_api.stages.<kind>), headline
first: `metrics` (result.json), `progress` (per-step headline numbers) and `progress_detail`
(per-step numbers only the plain progress line adds). This module declares what every training
stage reports and derives, per stage, the lists every display reads: the summary table, the
report, `rlhf status` and the status' progress numbers, the live bars and the plain lines. No
display keeps a list of its own (tests/foundation/test_metric_names.py checks it).

Import-light and pure: the trainer's progress lines and the operator's status read it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from .guards import KL_KEYS, REWARD_STD_KEYS
from .stages import STAGE_KINDS
from .stages.kind import StageKind

# Result metrics every training stage may report (result.json), headline first: the held-out
# task accuracy of a policy, a reward model's pair accuracy, the final stage's comparison (its
# win rate), the trainer's losses, and the RL stages' reward and KL. A kind's own follow them.
TRAINING_RESULTS = ("task_accuracy", "pair_accuracy", "eval_win_rate", "eval_loss", "train_loss", "reward_mean", "kl")
# Per-step numbers of the Trainer-based stages: the loss leads, the kind's own follow, then the
# evaluation loss and the learning rate.
STEP_LEAD = ("loss",)
STEP_TAIL = ("eval_loss", "learning_rate")
# Step numbers the status keeps beyond the shown ones: what the RL health guards judge.
GUARDED = (*KL_KEYS, *REWARD_STD_KEYS)
# How many numbers a compact place shows: a live bar, a row of the summary table.
HEADLINE_COUNT = 4

Numbers = tuple[tuple[str, float], ...]


def _kinds(stage: str | None) -> tuple[StageKind, ...]:
    """The stage's kind; every kind for a name no kind has (e.g. `compare` run alone)."""
    found = STAGE_KINDS.get(stage or "")
    return (found,) if found is not None else tuple(STAGE_KINDS.values())


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


@cache
def result_metrics(stage: str | None) -> tuple[str, ...]:
    """The result metrics shown for a stage, headline first."""
    return _unique((*TRAINING_RESULTS, *(m for kind in _kinds(stage) for m in kind.metrics)))


@cache
def step_headline(stage: str | None) -> tuple[str, ...]:
    """A stage's per-step headline numbers, in order: the live bars, the status, `rlhf status -w`."""
    return _unique((*STEP_LEAD, *(m for kind in _kinds(stage) for m in kind.progress), *STEP_TAIL))


@cache
def step_metrics(stage: str | None) -> tuple[str, ...]:
    """Every per-step number the plain progress line shows for a stage, in order."""
    return _unique((*step_headline(stage), *(m for kind in _kinds(stage) for m in kind.progress_detail)))


@cache
def status_step_metrics(stage: str | None) -> tuple[str, ...]:
    """The per-step numbers the status keeps for a stage: its headline and what the guards judge."""
    return _unique((*step_headline(stage), *GUARDED))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def pick(names: tuple[str, ...], values: Mapping[str, Any], limit: int | None = None) -> Numbers:
    """(name, value) of the numbers among `values` that `names` lists, in its order."""
    found = tuple((k, float(values[k])) for k in names if _is_number(values.get(k)))
    return found if limit is None else found[:limit]


def shown_results(stage: str | None, metrics: Mapping[str, Any], limit: int | None = None) -> Numbers:
    """A stage's result metrics as a display shows them: all (a stage's end), or the first few."""
    return pick(result_metrics(stage), metrics, limit)


def rank_of(stage: str | None) -> dict[str, int]:
    """Sort key for a stage's step numbers: its headline order, the guarded ones after."""
    return {k: i for i, k in enumerate(status_step_metrics(stage))}
