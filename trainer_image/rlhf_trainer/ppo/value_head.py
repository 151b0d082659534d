"""Policy + value head over one trunk, and the reference policy from the same weights.

The shared arrangement (the default) keeps ONE copy of the base weights: the policy is the
base with a trainable LoRA adapter, the reference is the same module with the adapter
disabled, and the value head reads the policy's last hidden states, so one forward pass
yields logits and values. Full fine-tuning needs a frozen reference copy (`reference`).

Precision: the trunk runs in the model's dtype (bf16 on GPUs); the value head, log-probs
and losses are fp32 (the head casts its input; log-probs upcast one sequence at a time).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from peft import PeftModel
from torch import nn


class ValueHead(nn.Module):
    """A linear map from the last hidden state to a scalar value per position."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        # Small initial values: the first value losses are then dominated by the returns.
        nn.init.normal_(self.summary.weight, std=1.0 / (hidden_size + 1))
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


def split_causal_lm(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder trunk returning last_hidden_state, lm_head) of a causal LM, peft-wrapped or not.

    peft injects LoRA layers in place, so the trunk of the unwrapped base still runs them.
    """
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    trunk = base.get_decoder()  # type: ignore[operator]
    head = base.get_output_embeddings()  # type: ignore[operator]
    if trunk is None or head is None:
        raise ValueError(f"{type(base).__name__} exposes no decoder/output embeddings")
    return trunk, head


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as generate() does for left-padded prompts."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def disable_dropout(model: nn.Module) -> None:
    """Dropout off everywhere (modules and attention probabilities), so that train mode, which
    gradient checkpointing needs, computes the same function as eval mode."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if hasattr(module, "attention_dropout") and isinstance(module.attention_dropout, float):
            setattr(module, "attention_dropout", 0.0)  # noqa: B010  # an nn.Module attribute to mypy


class ActorCritic(nn.Module):
    def __init__(self, policy: nn.Module, value_head: ValueHead, reference: nn.Module | None = None) -> None:
        super().__init__()
        if reference is None and not isinstance(policy, PeftModel):
            raise ValueError("without a LoRA adapter the reference policy needs its own frozen copy")
        self.policy = policy
        self.value_head = value_head
        self.reference = reference
        if reference is not None:
            reference.requires_grad_(False)
        # A tuple, not attributes: the policy's modules must not be registered twice.
        self._policy_parts = split_causal_lm(policy)
        self._checkpointing = False
        disable_dropout(self)
        self.eval()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        names = {id(p) for p in self.trainable_parameters()}
        return {n: p.detach().clone() for n, p in self.named_parameters() if id(p) in names}

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each decoder layer's activations in backward (transformers' own checkpointing,
        non-reentrant, so LoRA on a frozen base gets gradients without input grads)."""
        base = self.policy.get_base_model() if isinstance(self.policy, PeftModel) else self.policy
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # type: ignore[operator]
        self._checkpointing = True

    @contextlib.contextmanager
    def training_pass(self) -> Iterator[None]:
        """Train mode for a pass with gradients when checkpointing (transformers only checkpoints
        in train mode); dropout is off, so the function computed is the same as in eval mode."""
        if not self._checkpointing:
            yield
            return
        self.train()
        try:
            yield
        finally:
            self.eval()

    def policy_hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
    ) -> torch.Tensor:
        """The policy trunk's last hidden states [B, T, H] (with a KV cache while sampling)."""
        trunk, _ = self._policy_parts
        if position_ids is None:
            position_ids = position_ids_for(attention_mask)
        out = trunk(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=cache is not None,
        )
        return out.last_hidden_state  # type: ignore[no-any-return]

    def heads(self, hidden: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits / temperature in the model dtype, fp32 values) from policy hidden states."""
        _, lm_head = self._policy_parts
        return scaled_logits(lm_head, hidden, temperature), self.value_head(hidden)

    def forward(  # type: ignore[override]
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits / temperature predicting each response token, and the value of the state before it.

        Both have response length R = input_ids.shape[1] - response_start. The last token
        predicts nothing and, attention being causal, changes no other position: it is left out.
        """
        hidden = self.policy_hidden(input_ids[:, :-1], attention_mask[:, :-1])
        # Contiguous, so that the [B, R, V] head is one matrix product (on a strided slice torch
        # falls back to a batched product, ~1.5x slower forward and backward on CPU).
        return self.heads(hidden[:, response_start - 1 :].contiguous(), temperature)

    @torch.no_grad()
    def reference_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int, temperature: float = 1.0
    ) -> torch.Tensor:
        ids, mask = input_ids[:, :-1], attention_mask[:, :-1]  # as in forward()
        with self._reference_weights() as (trunk, head):
            hidden = trunk(input_ids=ids, attention_mask=mask, position_ids=position_ids_for(mask)).last_hidden_state
            return scaled_logits(head, hidden[:, response_start - 1 :].contiguous(), temperature)

    @contextlib.contextmanager
    def _reference_weights(self) -> Iterator[tuple[nn.Module, nn.Module]]:
        if self.reference is None:
            assert isinstance(self.policy, PeftModel)
            with self.policy.disable_adapter():
                yield self._policy_parts
        elif isinstance(self.reference, PeftModel):  # the frozen copy also hosts the reward adapter
            try:
                with self.reference.disable_adapter():
                    yield split_causal_lm(self.reference)
            finally:
                # peft marks an adapter trainable again when it re-enables it.
                self.reference.requires_grad_(False)
        else:
            yield split_causal_lm(self.reference)


def scaled_logits(lm_head: nn.Module, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
    """lm_head(hidden) / temperature; without a bias the division happens on the (much smaller)
    hidden states, so no second [B, T, V] tensor is made or kept for backward."""
    if temperature == 1.0:
        return lm_head(hidden)  # type: ignore[no-any-return]
    if getattr(lm_head, "bias", None) is None:
        return lm_head(hidden / temperature)  # type: ignore[no-any-return]
    return lm_head(hidden) / temperature  # type: ignore[no-any-return]
