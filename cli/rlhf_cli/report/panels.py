"""Which curves go on which plot: pure, from the tags a stage logged.

Tags are `<prefix>/<metric>` (`train/loss`, `eval/loss`, `ppo/kl`). A panel lists metric
names; every logged tag with one of them joins it, one line per tag. A metric no panel names
gets a panel of its own, unless it is bookkeeping (epoch, runtime, throughput counters).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .scalars import Series


@dataclass(frozen=True)
class PanelSpec:
    title: str
    metrics: tuple[str, ...]
    # (mean metric, std metric): the mean is drawn with a +-1 std band when both were logged.
    band: tuple[str, str] | None = None
    log_scale: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    slug: str
    series: tuple[Series, ...]
    band: tuple[Series, Series] | None = None
    log_scale: bool = False


PANELS: tuple[PanelSpec, ...] = (
    PanelSpec("Loss", ("loss",)),
    PanelSpec("Policy and value loss", ("policy_loss", "value_loss")),
    PanelSpec("Learning rate", ("learning_rate",)),
    PanelSpec("Reward (mean ± std)", ("reward_mean",), band=("reward_mean", "reward_std")),
    PanelSpec("Reward-model scores", ("mean_reward", "min_reward", "max_reward", "margin")),
    PanelSpec("DPO implicit rewards", ("rewards/chosen", "rewards/rejected", "rewards/margins")),
    PanelSpec("KL to the reference", ("kl", "approx_kl")),
    PanelSpec("KL coefficient", ("kl_coef",)),
    PanelSpec("Entropy", ("entropy",)),
    PanelSpec("Pair accuracy", ("accuracy", "rewards/accuracies")),
    PanelSpec("Token accuracy", ("mean_token_accuracy",)),
    PanelSpec("Response length (tokens)", ("response_length",)),
    PanelSpec("Clip fraction", ("clip_frac", "value_clip_frac")),
    PanelSpec("Gradient norm", ("grad_norm",), log_scale=True),
    PanelSpec("Throughput (tokens/s)", ("tokens_per_s",)),
    PanelSpec("Seconds per step", ("step_seconds", "rollout_seconds", "experience_seconds", "update_seconds")),
)

# Bookkeeping, not training curves.
IGNORED = re.compile(
    r"(^|/)(epoch|total_flos|num_tokens|runtime|train_runtime|train_loss|global_step|"
    r"[a-z_]*per_second)$"
)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "plot"


def panels(scalars: Mapping[str, Series], specs: Iterable[PanelSpec] = PANELS) -> list[Panel]:
    """The stage's panels in PANELS order, then one per remaining metric (sorted by tag)."""
    by_metric: dict[str, list[Series]] = {}
    for series in sorted(scalars.values(), key=lambda s: s.tag):
        if series.steps and not IGNORED.search(series.tag):
            by_metric.setdefault(series.metric, []).append(series)
    used: set[str] = set()
    found: list[Panel] = []
    for spec in specs:
        band = None
        if spec.band is not None:
            mean = _single(by_metric.get(spec.band[0], []))
            std = _single(by_metric.get(spec.band[1], []))
            if mean is not None and std is not None:
                band = (mean, std)
                used.add(spec.band[1])
        lines = [s for metric in spec.metrics for s in by_metric.get(metric, [])]
        if not lines:
            continue
        used.update(spec.metrics)
        found.append(Panel(spec.title, slug(spec.title), tuple(lines), band, spec.log_scale))
    for metric, rest in sorted(by_metric.items()):
        if metric not in used:
            found.append(Panel(metric, slug(metric), tuple(rest)))
    return found


def _single(series: list[Series]) -> Series | None:
    """The one series of a metric (a band needs exactly one mean and one std)."""
    return series[0] if len(series) == 1 else None


def label(series: Series, panel: Panel) -> str:
    """Line label: the prefix (train/eval) when the panel has one metric, else the metric too."""
    metrics = {s.metric for s in panel.series}
    if len(metrics) == 1:
        return series.prefix or series.metric
    return f"{series.prefix} {series.metric}".strip() if series.prefix in ("train", "eval") else series.metric
