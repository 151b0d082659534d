"""Task accuracy on the builtin task's held-out questions: greedy decoding, exact answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from rlhf_api.stage_config import DatasetConfig

from . import builtin_sources
from .data import split_template


@contextmanager
def _inference(model: Any, tokenizer: Any, padding_side: str) -> Iterator[Any]:
    """Eval mode and the given padding side for a while; both restored after. Yields the device."""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = padding_side
    try:
        yield next(model.parameters()).device
    finally:
        tokenizer.padding_side = side
        model.train(was_training)


@torch.no_grad()
def generate_answers(
    model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch_size: int = 64
) -> list[str]:
    """Greedy completions for prompts (left padding so every row ends at its prompt)."""
    outputs: list[str] = []
    with _inference(model, tokenizer, "left") as device:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(
                prompts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
            ).to(device)
            generated = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            outputs += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return outputs


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
    with _inference(model, tokenizer, "right") as device:
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
