"""Task accuracy on the builtin task's held-out questions: greedy decoding, exact answer."""

from __future__ import annotations

from typing import Any

import torch
from rlhf_api.stage_config import DatasetConfig

from . import builtin_sources, model_cache
from .data import split_template
from .generation import generate_texts, inference

ANSWER_BATCH = 64  # prompts per generate call: padding, so the numbers, depend on the batches


def generate_answers(
    model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch_size: int = ANSWER_BATCH
) -> list[str]:
    """Greedy completions for prompts (left padding so every row ends at its prompt)."""

    def encode(batch: list[str]) -> Any:
        return tokenizer(batch, return_tensors="pt", padding=True)

    answers = generate_texts(
        model,
        tokenizer,
        prompts,
        batch_size,
        encode,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model_cache.remember_answers(model, prompts, max_new_tokens, batch_size, answers)  # the comparison's, maybe
    return answers


def task_accuracy(
    model: Any,
    tokenizer: Any,
    dataset: DatasetConfig,
    work_dir: str,
    max_new_tokens: int,
    limit: int | None = None,
) -> float | None:
    """Share of held-out builtin questions answered exactly right; None without ground truth."""
    builtin = builtin_sources.dataset(dataset.source)
    if builtin is None:
        return None
    rows = builtin.eval_rows()[:limit] if limit else builtin.eval_rows()
    head, _ = split_template(dataset.template)
    prompts = [head.format(question=r["question"]) for r in rows]
    answers = generate_answers(model, tokenizer, prompts, max_new_tokens)
    correct = sum(builtin.is_correct(r["question"], a) for r, a in zip(rows, answers, strict=True))
    return correct / len(rows)


@torch.no_grad()
def reward_scores(model: Any, tokenizer: Any, texts: list[str], batch_size: int = 64) -> list[float]:
    """One scalar per text from a one-output sequence classifier (right padding)."""
    scores: list[float] = []
    with inference(model, tokenizer, "right") as device:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True, truncation=True).to(
                device
            )
            scores += model(**batch).logits[:, 0].float().tolist()
    return scores


def pair_accuracy(model: Any, tokenizer: Any, pairs: Any) -> float | None:
    """Share of preference pairs with score(prompt + chosen) > score(prompt + rejected).

    Texts end with the tokenizer's eos token, as the reward trainer formats them.
    """
    rows = list(pairs)
    if not rows:
        return None
    eos = tokenizer.eos_token or ""

    def text(row: Any, key: str) -> str:
        return f"{row.get('prompt', '')}{row[key]}{eos}"

    chosen = reward_scores(model, tokenizer, [text(r, "chosen") for r in rows])
    rejected = reward_scores(model, tokenizer, [text(r, "rejected") for r in rows])
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(rows)
