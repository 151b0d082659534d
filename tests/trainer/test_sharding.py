"""The sharding helpers that need no process group: names, gathering, the unsharded copy."""

from __future__ import annotations

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from rlhf_api.model_config import ModelConfig
from rlhf_api.stage_config import QuantizationConfig
from rlhf_trainer import sharding
from rlhf_trainer.modeling import BaseWeights, load_causal_lm
from rlhf_trainer.placement import Loading
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper


def test_names_are_the_unwrapped_models() -> None:
    model = nn.Sequential(checkpoint_wrapper(nn.Linear(2, 2)), nn.Linear(2, 1))
    assert sorted(sharding.named_parameters(model)) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    model[1].requires_grad_(False)
    assert sorted(sharding.gather_trainable(model)) == ["0.bias", "0.weight"]
    assert not sharding.is_sharded(model)


def test_unsharded_copy_rebuilds_the_trained_model_from_its_base(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = BaseWeights(ModelConfig(name="builtin:tiny-llama"), QuantizationConfig(), str(tmp_path))
    lm, tokenizer = load_causal_lm(base.model, base.quantization, base.work_dir)
    model = get_peft_model(lm, PeftLoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():  # "trained": non-zero adapters, so the copy differs from the base
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    copy = sharding.unsharded_copy(model, True, base, Loading())
    assert sharding.unsharded_copy(model, False, base, Loading()) is None
    ids = tokenizer(["What is 12 + 3?"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(copy(input_ids=ids).logits, model(input_ids=ids).logits)
