"""Scoring responses with the reward stage's sequence classifier, in its own tokenizer."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase


class RewardModelScorer:
    """reward_fn for the engine: score(prompt + response + eos) with the reward model.

    The text is re-tokenized with the reward model's tokenizer (it may differ from the
    policy's), and eos is appended as TRL's RewardTrainer does for its training pairs, so the
    scored text looks like what the reward model was trained on.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 32,
        max_length: int | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device or torch.device("cpu")

    def texts(self, prompts: list[str], responses: list[str]) -> list[str]:
        eos = self.tokenizer.eos_token or ""
        return [p + r + (eos if eos and not r.endswith(eos) else "") for p, r in zip(prompts, responses, strict=True)]

    @torch.no_grad()
    def __call__(self, prompts: list[str], responses: list[str], response_token_ids: list[list[int]]) -> torch.Tensor:
        texts = self.texts(prompts, responses)
        scores = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=self.max_length is not None,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            logits = self.model(**batch).logits
            scores.append(logits[:, 0].float().cpu())
        return torch.cat(scores)
