"""Builtin verifiable rewards: 1.0 for a right answer, 0.0 otherwise, no model involved.

Pure functions of text (no torch): `arithmetic` reads the question from the prompt itself, so
it needs no dataset column; `exact_match` compares with a ground-truth column.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from rlhf_api.reward_sources import AnswerExtraction

from .. import builtin_sources

# The builtin task whose answers `arithmetic` checks (its questions: _QUESTION).
ARITHMETIC = f"{builtin_sources.PREFIX}arithmetic"
_QUESTION = re.compile(r"What is \d+ \+ \d+\?")
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")
# Stripped from both ends of an answer before comparing: spaces and sentence punctuation.
_EDGE = string.whitespace + ".,;:!?\"'`"


def completion_text(completion: Any) -> str:
    """A completion as text: a string, or the last message's content of a conversational one."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def first_line(text: str) -> str:
    """The answer part of a generation: up to the first line break, stripped."""
    return text.strip().split("\n", 1)[0].strip()


def arithmetic(prompts: list[Any], completions: list[Any], **_: Any) -> list[float | None]:
    """builtin:arithmetic: the response's first line is exactly the sum the prompt asks for.

    None (no reward, ignored by TRL's averages) when the prompt has no such question."""
    task = builtin_sources.dataset(ARITHMETIC)
    assert task is not None, f"{ARITHMETIC} is not registered"
    scores: list[float | None] = []
    for prompt, completion in zip(prompts, completions, strict=True):
        asked = _QUESTION.findall(completion_text(prompt))
        if not asked:
            scores.append(None)
            continue
        scores.append(1.0 if task.is_correct(asked[-1], completion_text(completion)) else 0.0)
    return scores


def extract(text: str, how: AnswerExtraction) -> str:
    if how == "firstLine":
        return first_line(text)
    if how == "lastNumber":
        numbers = _NUMBER.findall(text)
        return numbers[-1] if numbers else ""
    return text


def normalize(answer: str) -> str:
    """Case, surrounding spaces and punctuation, inner runs of spaces, thousands separators and
    number spellings (2.50 == 2.5) do not matter."""
    text = " ".join(answer.strip(_EDGE).split()).casefold()
    if _NUMBER.fullmatch(text):
        try:
            number = Decimal(text.replace(",", ""))
        except InvalidOperation:
            return text
        return format(number.normalize(), "f")
    return text


def exact_match(column: str, how: AnswerExtraction) -> Callable[..., list[float | None]]:
    """builtin exactMatch: the extracted answer equals the sample's `column` value, normalised.

    None where the column is empty (no ground truth for that sample)."""

    def score(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
        truths = columns[column]
        scores: list[float | None] = []
        for truth, completion in zip(truths, completions, strict=True):
            if truth is None or str(truth).strip() == "":
                scores.append(None)
                continue
            answer = extract(completion_text(completion), how)
            scores.append(1.0 if normalize(answer) == normalize(str(truth)) else 0.0)
        return scores

    return score
