"""The estimate's parameter counts against real transformers models, and its weight figures
against accelerate's own formula (`accelerate estimate-memory` needs the hub: it looks the model
up there even for a local directory, so the same computation runs here on a config we build)."""

from __future__ import annotations

import pytest
from accelerate import init_empty_weights
from accelerate.utils import calculate_maximum_sizes
from rlhf_api.precision import Precision
from rlhf_api.stage_config import QuantizationConfig
from rlhf_operator.estimate.catalog import CATALOG, Architecture, from_config
from rlhf_operator.estimate.memory import GIB, weight_bytes
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
)

SMALL = {
    "llama, GQA, untied": {"model_type": "llama", "num_key_value_heads": 2, "tie_word_embeddings": False},
    "llama, tied, head_dim": {"model_type": "llama", "tie_word_embeddings": True, "head_dim": 32},
    "qwen2, qkv bias": {"model_type": "qwen2", "num_key_value_heads": 2, "tie_word_embeddings": False},
    "mistral": {"model_type": "mistral", "num_key_value_heads": 2},
    "gpt2": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128},
    "gpt_neox": {"model_type": "gpt_neox", "tie_word_embeddings": False},
}
COMMON = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "intermediate_size": 160,
    "vocab_size": 300,
}


def config_for(fields: dict[str, object]) -> PretrainedConfig:
    values = {**COMMON, **fields} if fields["model_type"] != "gpt2" else {**fields, "vocab_size": 300}
    model_type = str(values.pop("model_type"))
    return AutoConfig.for_model(model_type, **values)


@pytest.mark.parametrize("name", SMALL)
def test_parameter_count_matches_transformers(name: str) -> None:
    config = config_for(SMALL[name])
    arch = from_config(config.to_dict())
    model = AutoModelForCausalLM.from_config(config)  # real weights: tying happens (not on meta)
    assert arch.params() == sum(p.numel() for p in model.parameters())
    if arch.family == "llama":
        config.num_labels = 1
        classifier = AutoModelForSequenceClassification.from_config(config)
        assert arch.params(classifier=True) == sum(p.numel() for p in classifier.parameters())


def hf_config(arch: Architecture) -> PretrainedConfig:
    return AutoConfig.for_model(
        "qwen2" if arch.qkv_bias else "llama",
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads,
        intermediate_size=arch.intermediate_size,
        vocab_size=arch.vocab_size,
        tie_word_embeddings=arch.tie_word_embeddings,
    )


@pytest.mark.parametrize("name", ["meta-llama/Llama-2-7b-hf", "mistralai/Mistral-7B-v0.1", "meta-llama/Llama-2-70b-hf"])
def test_weight_figures_agree_with_accelerates_formula(name: str) -> None:
    arch = CATALOG[name]
    with init_empty_weights():
        body = AutoModel.from_config(hf_config(arch))  # what accelerate estimate-memory builds
    total, _ = calculate_maximum_sizes(body)  # fp32 bytes; accelerate divides by 2 / 4 / 8 for fp16 / int8 / int4
    head = arch.head_params * 4
    fp32 = weight_bytes(arch, Precision("float32", "no"), QuantizationConfig())
    bf16 = weight_bytes(arch, Precision("bfloat16", "bf16"), QuantizationConfig())
    int8 = weight_bytes(arch, Precision("bfloat16", "bf16"), QuantizationConfig(mode="8bit"))
    nf4 = weight_bytes(arch, Precision("bfloat16", "bf16"), QuantizationConfig(mode="4bit-nf4"))
    print(
        f"{name}: accelerate (no LM head) fp32 {total / GIB:.2f} fp16 {total / 2 / GIB:.2f} "
        f"int8 {total / 4 / GIB:.2f} int4 {total / 8 / GIB:.2f} GiB; ours (with LM head) fp32 {fp32 / GIB:.2f} "
        f"bf16 {bf16 / GIB:.2f} 8bit {int8 / GIB:.2f} nf4 {nf4 / GIB:.2f} GiB"
    )
    # the same parameters, exactly; accelerate also counts the rotary embedding's two buffers
    buffers = 2 * (arch.dim_per_head // 2) * 4
    assert fp32 - head + buffers == total
    assert bf16 - head / 2 + buffers / 2 == total / 2
    # bitsandbytes quantizes the decoder's linear layers only: embeddings, norms and the head stay
    # 16-bit, and NF4 stores quantization constants, so ours is larger, by a bounded amount
    assert total / 4 < int8 - head / 2 < total / 4 * 1.1
    assert total / 8 < nf4 - head / 2 < total / 8 * 1.2
