"""The one generation loop behind evaluation (greedy answers: `evaluate.generate_answers`, the
comparison) and sampling (several sampled responses per prompt: `sampling.sample_responses`,
ReST's Grow step, RLAIF's candidate pairs): eval mode and left padding for a while, prompts in
batches, transformers' generate, the new tokens decoded with special tokens dropped."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device  # type: ignore[no-any-return]


@contextmanager
def inference(model: Any, tokenizer: Any, padding_side: str) -> Iterator[torch.device]:
    """Eval mode and the given padding side for a while; both restored after. Yields the device."""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = padding_side
    try:
        yield model_device(model)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)


@torch.no_grad()
def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    batch_size: int,
    encode: Callable[[list[str]], Mapping[str, torch.Tensor]],
    **generate_kwargs: Any,
) -> list[str]:
    """One completion per prompt, in order: `encode(batch of prompts)` gives the model's inputs
    (left-padded input_ids, attention_mask, ...), `generate_kwargs` go to model.generate as they
    are. After its eos a row holds padding only: both are special tokens, dropped here."""
    texts: list[str] = []
    with inference(model, tokenizer, "left") as device:
        for start in range(0, len(prompts), batch_size):
            batch = {name: value.to(device) for name, value in encode(prompts[start : start + batch_size]).items()}
            output = model.generate(**batch, **generate_kwargs)
            texts += tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return texts
