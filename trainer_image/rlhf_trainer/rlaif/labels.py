"""Pure parts of AI labelling: judge prompts, pairs, both-order preferences, agreement."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_PLACEHOLDER = re.compile(r"\{(constitution|prompt|response_a|response_b)\}")


def constitution_text(principles: Sequence[str]) -> str:
    return "\n".join(f"- {p}" for p in principles)


def judge_prompt(template: str, constitution: str, prompt: str, response_a: str, response_b: str) -> str:
    """The template with its four placeholders filled in one pass (text inside a response that
    looks like a placeholder stays as it is; other braces in the template are kept)."""
    values = {"constitution": constitution, "prompt": prompt, "response_a": response_a, "response_b": response_b}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def pick_pair(candidates: Sequence[str]) -> tuple[str, str] | None:
    """The first two candidates that differ (ignoring surrounding whitespace), or None."""
    first = candidates[0] if candidates else None
    for other in candidates[1:]:
        if first is not None and other.strip() != first.strip():
            return first, other
    return None


@dataclass(frozen=True)
class Judgement:
    """The judge's verdict on one pair, from both orders of presentation.

    a_first: P(response a) when a is shown as response A; a_second: P(response a) when a is
    shown as response B; None where that order got no verdict (an endpoint judge whose answer
    named neither label). Their mean cancels a preference for a position.

    The pair is decided when both orders have a verdict; only then has it a preference and a
    confidence: the mean probability of the preferred response over both orders, in [0.5, 1]
    (a parsed pair: 1 when both orders agree, 0.5 when they disagree). An undecided pair has
    confidence 0 and is never written as a preference; nor is a decided one at exactly 0.5
    (no preference: the first response would be a coin flip).
    """

    prompt: str
    a: str
    b: str
    a_first: float | None
    a_second: float | None

    @property
    def decided(self) -> bool:
        return self.a_first is not None and self.a_second is not None

    @property
    def p_a(self) -> float:
        """P(a) averaged over both orders; 0.5 (no preference) for an undecided pair."""
        if self.a_first is None or self.a_second is None:
            return 0.5
        return (self.a_first + self.a_second) / 2

    @property
    def has_preference(self) -> bool:
        return self.decided and self.p_a != 0.5

    @property
    def prefers_a(self) -> bool:
        return self.p_a >= 0.5

    @property
    def chosen(self) -> str:
        return self.a if self.prefers_a else self.b

    @property
    def rejected(self) -> str:
        return self.b if self.prefers_a else self.a

    @property
    def confidence(self) -> float:
        """The averaged probability of the preferred response, in [0.5, 1]; 0 when undecided."""
        return max(self.p_a, 1.0 - self.p_a) if self.decided else 0.0

    @property
    def first_position(self) -> float | None:
        """The judge's mean probability for whichever response it saw first (0.5: no position
        bias); None when undecided."""
        if self.a_first is None or self.a_second is None:
            return None
        return (self.a_first + (1.0 - self.a_second)) / 2

    @property
    def orders_agree(self) -> bool | None:
        """Whether both orders prefer the same response; None when undecided."""
        if self.a_first is None or self.a_second is None:
            return None
        return (self.a_first >= 0.5) == (self.a_second >= 0.5)


def keep(judgement: Judgement, threshold: float) -> bool:
    """Whether a judged pair is written as a preference: decided, with a preference, at
    `threshold` confidence or more."""
    return judgement.has_preference and judgement.confidence >= threshold


def agreement(judgements: Sequence[Judgement], correct: Sequence[tuple[bool | None, bool | None]]) -> tuple[int, int]:
    """(labels that prefer the right response, pairs with a preference and exactly one right
    response).

    `correct[i]` says whether judgements[i].a and .b are right (None: no ground truth)."""
    agreeing = total = 0
    for judgement, (a_right, b_right) in zip(judgements, correct, strict=True):
        if not judgement.has_preference or a_right is None or b_right is None or a_right == b_right:
            continue
        total += 1
        agreeing += int(judgement.prefers_a == a_right)
    return agreeing, total
