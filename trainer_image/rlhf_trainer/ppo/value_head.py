"""Policy + value head over one trunk, and the reference policy from the same weights.

The shared arrangement (the default) keeps ONE copy of the base weights: the policy is the
base with a trainable LoRA adapter, the reference is the same module with the adapter
disabled, and the value head reads the policy's last hidden states, so one forward pass
yields logits and values. `reference` / `value_trunk` exist for full fine-tuning (which needs
a frozen reference copy) and for the benchmark's naive arrangement (separate copies).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


class ActorCritic(nn.Module):
    def __init__(
        self,
        policy: nn.Module,
        value_head: ValueHead,
        reference: nn.Module | None = None,
        value_trunk: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if reference is None and not isinstance(policy, PeftModel):
            raise ValueError("without a LoRA adapter the reference policy needs its own frozen copy")
        self.policy = policy
        self.value_head = value_head
        self.reference = reference
        self.value_trunk = value_trunk
        if reference is not None:
            reference.requires_grad_(False)
        # A tuple, not attributes: the policy's modules must not be registered twice.
        self._policy_parts = split_causal_lm(policy)

    @property
    def shares_weights(self) -> bool:
        return self.reference is None and self.value_trunk is None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        names = {id(p) for p in self.trainable_parameters()}
        return {n: p.detach().clone() for n, p in self.named_parameters() if id(p) in names}

    def forward(  # type: ignore[override]
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits predicting each response token, and the value of the state before it.

        Both have response length R = input_ids.shape[1] - response_start.
        """
        positions = position_ids_for(attention_mask)
        trunk, lm_head = self._policy_parts
        hidden = trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).last_hidden_state
        before_response = hidden[:, response_start - 1 : -1]
        logits = lm_head(before_response)
        if self.value_trunk is None:
            values = self.value_head(before_response)
        else:
            value_hidden = self.value_trunk(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
            ).last_hidden_state
            values = self.value_head(value_hidden[:, response_start - 1 : -1])
        return logits, values

    @torch.no_grad()
    def reference_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int
    ) -> torch.Tensor:
        positions = position_ids_for(attention_mask)
        with self._reference_weights() as (trunk, head):
            hidden = trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).last_hidden_state
            return head(hidden[:, response_start - 1 : -1])  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def _reference_weights(self) -> Iterator[tuple[nn.Module, nn.Module]]:
        if self.reference is not None:
            yield split_causal_lm(self.reference)
        else:
            assert isinstance(self.policy, PeftModel)
            with self.policy.disable_adapter():
                yield self._policy_parts
