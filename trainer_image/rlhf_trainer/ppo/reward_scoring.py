"""Scoring responses with the reward stage's model, in the reward model's tokenizer.

Two ways to hold the reward model:
- a separate sequence classifier (`classifier_score`), e.g. a merged reward model or an
  encoder trained from another base;
- the reward stage's LoRA adapter and score head on base weights already in memory
  (`load_reward_adapter` + `AdapterScore`): when the reward model was trained as a LoRA
  adapter on the same weights the PPO policy starts from, policy, reference, value and reward
  all share one set of base weights, and scoring switches adapters instead of holding a
  second model (LLaMA-Factory's `reward_model_type: lora`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from .value_head import split_causal_lm

# (input_ids, attention_mask) -> one score per row, [B] fp32.
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
REWARD_ADAPTER = "reward"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def classifier_score(model: nn.Module) -> ScoreFn:
    """A one-output sequence classifier as a ScoreFn (frozen, eval mode)."""
    model.eval().requires_grad_(False)

    def score(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()  # type: ignore[no-any-return]

    return score


class RewardModelScorer:
    """reward_fn for the engine: score(prompt + response + eos) with the reward model.

    The text is re-tokenized with the reward model's tokenizer (it may differ from the
    policy's), and eos is appended as TRL's RewardTrainer does for its training pairs, so the
    scored text looks like what the reward model was trained on.
    """

    def __init__(
        self,
        score: ScoreFn,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 32,
        max_length: int | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.score = score
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
            scores.append(self.score(batch["input_ids"], batch["attention_mask"]).cpu())
        return torch.cat(scores)


def _score_head(weights: dict[str, torch.Tensor], head_names: list[str], hidden_size: int) -> nn.Linear:
    """The score head saved beside the adapter (peft's modules_to_save for SEQ_CLS)."""
    for name in head_names:
        weight = next((v for k, v in weights.items() if k.endswith(f".{name}.weight")), None)
        if weight is None:
            continue
        bias = next((v for k, v in weights.items() if k.endswith(f".{name}.bias")), None)
        if weight.shape != (1, hidden_size):
            raise ValueError(
                f"the reward adapter's {name} head has shape {tuple(weight.shape)}, not (1, {hidden_size})"
            )
        head = nn.Linear(hidden_size, 1, bias=bias is not None)
        with torch.no_grad():
            head.weight.copy_(weight.float())
            if bias is not None:
                head.bias.copy_(bias.float())
        return head.requires_grad_(False)
    raise ValueError(f"the reward adapter holds no score head (looked for {head_names})")


def load_reward_adapter(host: nn.Module, adapter_dir: str | Path) -> tuple[PeftModel, nn.Linear]:
    """Attach the reward stage's LoRA adapter (frozen) to `host` and return (host, score head).

    host: the policy's PeftModel (LoRA PPO: the adapter is added beside the policy's) or a plain
    frozen copy of the base (full fine-tuning: the reference copy), which is then wrapped.
    """
    adapter_dir = Path(adapter_dir)
    saved = LoraConfig.from_pretrained(str(adapter_dir))
    weights = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    head_names = list(saved.modules_to_save or [])
    config = copy.deepcopy(saved)
    # The LoRA layers alone: the score head lives outside the causal LM, and nothing trains.
    config.modules_to_save = None
    config.task_type = "CAUSAL_LM"
    config.lora_dropout = 0.0
    config.inference_mode = True
    if isinstance(host, PeftModel):
        if REWARD_ADAPTER in host.peft_config:
            raise ValueError(f"the model already has an adapter named {REWARD_ADAPTER!r}")
        host.add_adapter(REWARD_ADAPTER, config)
    else:
        host = get_peft_model(host, config, adapter_name=REWARD_ADAPTER)  # type: ignore[arg-type]
    head_keys = {k for k in weights if any(f".{name}." in k for name in head_names)}
    outcome: Any = set_peft_model_state_dict(
        host, {k: v for k, v in weights.items() if k not in head_keys}, adapter_name=REWARD_ADAPTER
    )
    if outcome.unexpected_keys:
        raise ValueError(f"the reward adapter does not fit this model: {sorted(outcome.unexpected_keys)[:3]}...")
    missing = [k for k in outcome.missing_keys if f".{REWARD_ADAPTER}." in k]
    if missing:
        raise ValueError(f"the reward adapter lacks weights for {missing[:3]}...")
    for name, param in host.named_parameters():
        if f".{REWARD_ADAPTER}." in name:
            param.requires_grad_(False)
    hidden_size = host.get_base_model().config.get_text_config().hidden_size  # type: ignore[operator]
    return cast(PeftModel, host), _score_head(weights, head_names, hidden_size)


@contextlib.contextmanager
def active_adapter(model: PeftModel, name: str) -> Iterator[None]:
    """Run with adapter `name` active (frozen), then restore the previous one as it was."""
    previous = model.active_adapter
    if previous == name:
        yield
        return
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    model.set_adapter(name, inference_mode=True)
    try:
        yield
    finally:
        model.set_adapter(previous)
        # set_adapter marks the restored adapter trainable: keep exactly what was trainable.
        for n, p in model.named_parameters():
            p.requires_grad_(n in trainable)


class AdapterScore:
    """ScoreFn of the reward adapter on a shared base: the sequence classifier's computation
    (trunk, score head on the last non-padding token) with the reward adapter switched on."""

    def __init__(self, host: PeftModel, head: nn.Linear, pad_token_id: int | None) -> None:
        self.host = host
        self.head = head
        self.pad_token_id = pad_token_id
        self.trunk, _ = split_causal_lm(host)

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with active_adapter(self.host, REWARD_ADAPTER):
            hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pad_token_id is None:
            last = torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
        else:
            # As transformers' sequence classifiers: the rightmost token that is not padding.
            columns = torch.arange(input_ids.shape[1], device=input_ids.device)
            last = (columns * (input_ids != self.pad_token_id)).argmax(-1)
        pooled = hidden[torch.arange(input_ids.shape[0], device=input_ids.device), last]
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1).float()  # type: ignore[no-any-return]
