"""Which logged tags land on which plot: table-driven, pure."""

from __future__ import annotations

import pytest
from rlhf_cli.report.panels import label, panels
from rlhf_cli.report.scalars import Series


def scalars(*tags: str, points: int = 3) -> dict[str, Series]:
    return {t: Series(t, tuple(range(points)), tuple(float(i) for i in range(points))) for t in tags}


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        # SFT (TRL): loss train+eval on one plot; bookkeeping dropped
        (
            ("train/loss", "eval/loss", "train/learning_rate", "train/entropy", "train/epoch", "train/train_runtime"),
            [
                ("Loss", ["eval/loss", "train/loss"]),
                ("Learning rate", ["train/learning_rate"]),
                ("Entropy", ["train/entropy"]),
            ],
        ),
        # reward (TRL): pair accuracy and the reward model's score statistics
        (
            ("train/accuracy", "train/mean_reward", "train/min_reward", "train/margin", "train/num_tokens"),
            [
                ("Reward-model scores", ["train/mean_reward", "train/min_reward", "train/margin"]),
                ("Pair accuracy", ["train/accuracy"]),
            ],
        ),
        # PPO (our engine): reward band, KL and its coefficient apart, losses together
        (
            ("ppo/reward_mean", "ppo/reward_std", "ppo/kl", "ppo/kl_coef", "ppo/policy_loss", "ppo/value_loss"),
            [
                ("Policy and value loss", ["ppo/policy_loss", "ppo/value_loss"]),
                ("Reward (mean ± std)", ["ppo/reward_mean"]),
                ("KL to the reference", ["ppo/kl"]),
                ("KL coefficient", ["ppo/kl_coef"]),
            ],
        ),
        # DPO (TRL): implicit rewards and their accuracy; an unknown metric gets its own plot
        (
            ("train/rewards/chosen", "train/rewards/margins", "eval/rewards/accuracies", "train/logps/chosen"),
            [
                ("DPO implicit rewards", ["train/rewards/chosen", "train/rewards/margins"]),
                ("Pair accuracy", ["eval/rewards/accuracies"]),
                ("logps/chosen", ["train/logps/chosen"]),
            ],
        ),
        ((), []),
    ],
)
def test_panels_group_tags(tags: tuple[str, ...], expected: list[tuple[str, list[str]]]) -> None:
    found = panels(scalars(*tags))
    assert [(p.title, [s.tag for s in p.series]) for p in found] == expected


def test_reward_band_needs_both_mean_and_std() -> None:
    with_std = panels(scalars("ppo/reward_mean", "ppo/reward_std"))
    assert with_std[0].band is not None and [s.tag for s in with_std[0].band] == ["ppo/reward_mean", "ppo/reward_std"]
    without = panels(scalars("ppo/reward_mean"))
    assert without[0].band is None
    # a std alone is still shown, as its own plot
    assert [p.title for p in panels(scalars("ppo/reward_std"))] == ["reward_std"]


def test_slugs_are_file_names_and_labels_name_the_line() -> None:
    (loss, scores) = panels(scalars("train/loss", "eval/loss", "train/mean_reward", "train/margin"))
    assert loss.slug == "loss" and scores.slug == "reward-model-scores"
    assert [label(s, loss) for s in loss.series] == ["eval", "train"]
    assert [label(s, scores) for s in scores.series] == ["train mean_reward", "train margin"]


def test_empty_series_are_skipped() -> None:
    assert panels({"train/loss": Series("train/loss", (), ())}) == []
