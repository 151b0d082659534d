"""The pure parts of ReST (schedule, thresholds, kept samples) and RLAIF (judge prompts, pairs,
both-order preferences, agreement with ground truth), table-driven."""

from __future__ import annotations

import pytest
from rlhf_trainer.rlaif.labels import Judgement, agreement, constitution_text, judge_prompt, keep, pick_pair
from rlhf_trainer.self_training.schedule import Step, grow_prompts, kept, steps, threshold


def test_steps_are_grow_major() -> None:
    assert steps(2, 3) == [Step(1, 1), Step(1, 2), Step(1, 3), Step(2, 1), Step(2, 2), Step(2, 3)]
    assert Step(2, 1).name == "grow-2-improve-1"


@pytest.mark.parametrize(
    ("rewards", "mode", "value", "limit"),
    [
        ([1.0, 2.0, 3.0, 4.0, 5.0], "percentile", 50.0, 3.0),
        ([1.0, 2.0, 3.0, 4.0], "percentile", 50.0, 2.5),  # interpolated, as numpy.percentile
        ([1.0, 2.0, 3.0, 4.0, 5.0], "percentile", 0.0, 1.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0], "percentile", 75.0, 4.0),
        ([1.0, 2.0], "absolute", 7.5, 7.5),
        ([], "percentile", 50.0, float("inf")),
    ],
)
def test_threshold(rewards: list[float], mode: str, value: float, limit: float) -> None:
    assert threshold(rewards, mode, value) == limit  # type: ignore[arg-type]


def test_kept_includes_ties_at_the_threshold() -> None:
    assert kept([0.5, 3.0, 3.0, 1.0, 4.0], 3.0) == [1, 2, 4]
    assert kept([0.5, 1.0], 2.0) == []


@pytest.mark.parametrize(
    ("count", "grow", "per_grow", "expected"),
    [
        (5, 1, None, [0, 1, 2, 3, 4]),
        (5, 2, 9, [0, 1, 2, 3, 4]),
        (5, 1, 2, [0, 1]),
        (5, 2, 2, [2, 3]),
        (5, 3, 2, [4, 0]),  # wraps around: each Grow step sees the next prompts
    ],
)
def test_grow_prompts(count: int, grow: int, per_grow: int | None, expected: list[int]) -> None:
    assert grow_prompts(count, grow, per_grow) == expected


def test_judge_prompt_fills_placeholders_once() -> None:
    template = "{constitution}|{prompt}|A={response_a}|B={response_b}|{other}"
    text = judge_prompt(template, constitution_text(["Be right.", "Be brief."]), "Q?", "x {response_b}", "y")
    assert text == "- Be right.\n- Be brief.|Q?|A=x {response_b}|B=y|{other}"


@pytest.mark.parametrize(
    ("candidates", "pair"),
    [
        (["42", "42", " 42", "32", "41"], ("42", "32")),
        (["42", "32"], ("42", "32")),
        (["42", "42 "], None),
        (["42"], None),
        ([], None),
    ],
)
def test_pick_pair(candidates: list[str], pair: tuple[str, str] | None) -> None:
    assert pick_pair(candidates) == pair


@pytest.mark.parametrize(
    ("a_first", "a_second", "chosen", "confidence", "first_position", "orders_agree"),
    [
        (0.9, 0.7, "a", 0.8, 0.6, True),
        (0.9, 0.3, "a", 0.6, 0.8, False),  # a strong first-position bias: averaged away
        (0.2, 0.4, "b", 0.7, 0.4, True),
        (0.5, 0.5, "a", 0.5, 0.5, True),  # a tie: no preference, never written (keep below)
    ],
)
def test_both_orders_are_averaged(
    a_first: float, a_second: float, chosen: str, confidence: float, first_position: float, orders_agree: bool
) -> None:
    judgement = Judgement(prompt="p", a="a", b="b", a_first=a_first, a_second=a_second)
    assert judgement.chosen == chosen and judgement.rejected == ("b" if chosen == "a" else "a")
    assert judgement.confidence == pytest.approx(confidence)
    assert judgement.first_position == pytest.approx(first_position)
    assert judgement.orders_agree is orders_agree


def test_agreement_counts_pairs_with_exactly_one_right_response() -> None:
    judged = [Judgement("p", "a", "b", 0.9, 0.9), Judgement("p", "a", "b", 0.1, 0.1)] * 3
    truth: list[tuple[bool | None, bool | None]] = [
        (True, False),  # prefers a, a right: agrees
        (True, False),  # prefers b, a right: disagrees
        (True, True),  # both right: no ground truth for the label
        (False, True),  # prefers b, b right: agrees
        (None, False),  # unknown
        (False, False),
    ]
    assert agreement(judged, truth) == (2, 3)


def test_a_pair_undecided_in_either_order_has_no_preference_and_is_never_written() -> None:
    """Item 1 and 2 of issue 24: an unparsed order is no verdict, never a coin flip at 0.5; a
    mixed pair (one order parsed, the other not) is undecided, never confidence 0.75."""
    mixed = Judgement(prompt="p", a="a", b="b", a_first=1.0, a_second=None)
    none = Judgement(prompt="p", a="a", b="b", a_first=None, a_second=None)
    for judgement in (mixed, none):
        assert not judgement.decided and not judgement.has_preference
        assert judgement.confidence == 0.0 and judgement.orders_agree is None
        assert not keep(judgement, 0.5)
    tie = Judgement(prompt="p", a="a", b="b", a_first=1.0, a_second=0.0)  # parsed, the orders disagree
    assert tie.decided and tie.confidence == 0.5 and not tie.has_preference and not keep(tie, 0.5)
    agreeing = Judgement(prompt="p", a="a", b="b", a_first=0.0, a_second=0.0)
    assert keep(agreeing, 0.75) and agreeing.chosen == "b" and agreeing.confidence == 1.0
    assert agreement([mixed, tie, agreeing], [(True, False)] * 3) == (0, 1)  # only the decided preference counts


def test_the_verdict_gate_counts_each_order() -> None:
    from rlhf_trainer.stages.rlaif import decided_share

    judged = [
        Judgement("p", "a", "b", 1.0, None),
        Judgement("p", "a", "b", None, None),
        Judgement("p", "a", "b", 0.9, 0.8),
        Judgement("p", "a", "b", 0.2, 0.1),
    ]
    assert decided_share(judged) == 5 / 8
