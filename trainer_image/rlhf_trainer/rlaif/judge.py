"""The judge model's preference between two responses, read from its probabilities of the choices.

For each pair the judge sees the prompt twice, once with each response first. In each order
the two choices are scored by the log-probability of their tokens right after the judge prompt
(labels mode: the labels, e.g. "A"/"B"; responses mode: the responses themselves plus eos), and
normalised over the two: P(first) = sigmoid(logp(first) - logp(second)). No text is generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from rlhf_api.rlaif_config import RlaifLabelConfig

from ..generation import model_device
from ..ppo.core import logprobs_from_logits
from .labels import Judgement, constitution_text, judge_prompt


class PairJudge:
    def __init__(self, model: Any, tokenizer: Any, config: RlaifLabelConfig) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.config = config
        self.constitution = constitution_text(config.constitution)
        self.max_positions: int | None = getattr(model.config, "max_position_embeddings", None)

    def _choice_ids(self, first: str, second: str) -> tuple[list[int], list[int]]:
        if self.config.choices == "labels":
            texts, suffix = self.config.labels, []
        else:
            eos = self.tokenizer.eos_token_id
            texts, suffix = [first, second], [] if eos is None else [eos]
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] + suffix for t in texts]
        return ids[0], ids[1]

    def _sequence(self, prompt_ids: list[int], choice: list[int]) -> tuple[list[int], int]:
        """prompt + choice, the prompt cut from the left to fit the model; returns (ids, choice start)."""
        if self.max_positions is not None and len(prompt_ids) + len(choice) > self.max_positions:
            prompt_ids = prompt_ids[len(prompt_ids) + len(choice) - self.max_positions :]
        return prompt_ids + choice, len(prompt_ids)

    @torch.no_grad()
    def _log_probs(self, sequences: list[tuple[list[int], int]]) -> list[float]:
        """Sum of log-probabilities of each sequence's tokens from its choice start on."""
        device = model_device(self.model)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out: list[float] = []
        for start in range(0, len(sequences), self.config.judge_batch_size):
            batch = sequences[start : start + self.config.judge_batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (ids, _) in enumerate(batch):  # right padding: positions stay 0..n-1
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
            logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            for row, (ids, choice_start) in enumerate(batch):
                # Only the choice's tokens, on the device: no full-vocabulary fp32 copy.
                targets = torch.tensor(ids[choice_start:], device=logits.device)
                out.append(float(logprobs_from_logits(logits[row, choice_start - 1 : len(ids) - 1], targets).sum()))
        return out

    def first_choice_probability(self, rows: Sequence[tuple[str, str, str]]) -> list[float]:
        """P(first) for each (prompt, first response, second response), normalised over the two choices."""
        sequences: list[tuple[list[int], int]] = []
        for prompt, first, second in rows:
            text = judge_prompt(self.config.judge_template, self.constitution, prompt, first, second)
            prompt_ids = self.tokenizer(text)["input_ids"]
            for choice in self._choice_ids(first, second):
                sequences.append(self._sequence(prompt_ids, choice))
        scores = self._log_probs(sequences)
        return [float(torch.sigmoid(torch.tensor(scores[2 * i] - scores[2 * i + 1]))) for i in range(len(rows))]

    def judge(self, pairs: Sequence[tuple[str, str, str]]) -> list[Judgement]:
        """Both orders of each (prompt, a, b); see Judgement."""
        a_first = self.first_choice_probability(pairs)
        b_first = self.first_choice_probability([(p, b, a) for p, a, b in pairs])
        return [
            Judgement(prompt=p, a=a, b=b, a_first=af, a_second=1.0 - bf)
            for (p, a, b), af, bf in zip(pairs, a_first, b_first, strict=True)
        ]
