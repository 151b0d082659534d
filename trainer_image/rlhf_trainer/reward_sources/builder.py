"""A stage's reward sources -> named reward functions and their weights.

The functions follow TRL's calling convention, so GRPOTrainer/RLOOTrainer take them as
`reward_funcs` (with `reward_weights`), and other stages score with `RewardFunctions.score`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rlhf_api.model_config import ModelConfig
from rlhf_api.reward_sources import DEFAULT_COLUMN, RewardSource, labels

from ..errors import StageError
from .classifier import classifier_reward
from .function import import_reward_function
from .verifiable import arithmetic, exact_match


class RewardFunction:
    """One source's scores: `fn(prompts=..., completions=..., **columns) -> [float | None]`.

    `__name__` is the source's label: TRL logs `rewards/<label>/mean` and `/std` by it.
    """

    def __init__(self, label: str, score: Callable[..., Sequence[Any]]) -> None:
        self.__name__ = label
        self._score = score

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        scores = list(self._score(prompts=prompts, completions=completions, **kwargs))
        if len(scores) != len(completions):
            raise StageError(
                f"rewards.{self.__name__}",
                f"returned {len(scores)} scores for {len(completions)} completions (one per completion expected)",
            )
        return [None if s is None else float(s) for s in scores]

    def metrics(self) -> dict[str, float]:
        """A served source's call counts (remote_requests, remote_retries); {} for the others."""
        own = getattr(self._score, "metrics", None)
        return dict(own()) if callable(own) else {}


def served_metrics(functions: Sequence[Any]) -> dict[str, float]:
    """The call counts of every remote source, summed (the kinds declare remote_requests and
    remote_retries); {} when no source is served."""
    total: dict[str, float] = {}
    for function in functions:
        own = function.metrics() if isinstance(function, RewardFunction) else {}
        for key, value in own.items():
            total[key] = total.get(key, 0.0) + value
    return total


@dataclass
class RewardFunctions:
    functions: list[RewardFunction]
    weights: list[float]

    @property
    def labels(self) -> list[str]:
        return [f.__name__ for f in self.functions]

    def score(
        self, prompts: list[Any], completions: list[Any], columns: Mapping[str, list[Any]] | None = None
    ) -> tuple[list[float], dict[str, list[float | None]]]:
        """(weighted total per completion, each source's scores) outside TRL.

        A source's None (no verdict for that sample) counts as 0 in the total, as in TRL's
        nansum of weighted rewards."""
        per_source = {f.__name__: f(prompts, completions, **dict(columns or {})) for f in self.functions}
        totals = []
        for i in range(len(completions)):
            row = (scores[i] for scores in per_source.values())
            totals.append(math.fsum(w * s for w, s in zip(self.weights, row, strict=True) if s is not None))
        return totals, per_source


def build_reward_functions(
    sources: list[RewardSource],
    *,
    reward_model: ModelConfig | None,
    work_dir: str,
    columns: Sequence[str],
    device: torch.device | None = None,
    field: str = "rewards",
) -> RewardFunctions:
    """Load or import every source, checking what it needs (columns, a reward model) up front.

    `columns`: the dataset columns the functions will receive as keyword arguments.
    `field`: how errors name the list (e.g. "grpo.rewards").
    """
    device = device or torch.device("cpu")
    functions = []
    for index, (source, label) in enumerate(zip(sources, labels(sources), strict=True)):
        where = f"{field}[{index}]"
        score = _score_of(source, where, reward_model, work_dir, columns, device, index, label)
        functions.append(RewardFunction(label, score))
    return RewardFunctions(functions, [s.weight for s in sources])


def _score_of(
    source: RewardSource,
    where: str,
    reward_model: ModelConfig | None,
    work_dir: str,
    columns: Sequence[str],
    device: torch.device,
    index: int = 0,
    label: str = "",
) -> Callable[..., Sequence[Any]]:
    if source.type == "rewardModel":
        assert reward_model is not None  # TrainerJobConfig: a rewardModel source needs rewardModel
        return classifier_reward(reward_model, "rewardModel", work_dir, device)
    if source.type == "model":
        assert source.model is not None  # RewardSource validation
        return classifier_reward(source.model, f"{where}.model", work_dir, device)
    if source.type == "builtin":
        if source.builtin == "arithmetic":
            return arithmetic
        column = source.column or DEFAULT_COLUMN
        if column not in columns:
            raise StageError(
                f"{where}.column",
                f"column '{column}' not in the dataset (columns: {', '.join(columns)}); "
                "map one with dataset.fields or set column",
            )
        return exact_match(column, source.extract or "firstLine")
    if source.type == "remote":
        from ..serving.reward_client import remote_reward

        assert source.remote is not None  # RewardSource validation
        return remote_reward(source.remote, where, index, label, columns)
    assert source.function is not None  # type function, by RewardSource validation
    return import_reward_function(source.function, where, source.python_path)
