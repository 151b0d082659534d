"""Model sizes for the memory estimate, without torch and without the network.

An `Architecture` is the handful of config.json numbers that decide a transformer's parameter
count and its activation and KV-cache sizes. `lookup` finds one for a model name: a local
directory's config.json, then the Hugging Face hub cache (read offline, never downloaded), then
`CATALOG`, a built-in table of common architectures (their public config.json values).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Families by layout: gated MLP with q/k/v/o projections (Llama and its descendants), and the
# older GPT-2 / GPT-NeoX / BERT layouts (fused or separate projections, biases, LayerNorm).
LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "olmo2", "granite", "smollm3"}
GPT2, NEOX, BERT = "gpt2", "gpt_neox", "bert"
BERT_LIKE = {"bert", "roberta", "xlm-roberta", "electra"}


@dataclass(frozen=True)
class Architecture:
    """What the estimate needs to know about a model."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    family: str = "llama"  # llama | gpt2 | gpt_neox | bert
    head_dim: int | None = None
    qkv_bias: bool = False  # Qwen2: biases on q, k, v
    max_positions: int = 0  # learned position embeddings (GPT-2, BERT)

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    def linears(self) -> list[tuple[str, int, int]]:
        """(module name, in features, out features) of one layer's linear layers."""
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_heads * self.dim_per_head, self.num_kv_heads * self.dim_per_head
        if self.family == GPT2:
            return [("c_attn", h, 3 * h), ("c_proj", h, h), ("c_fc", h, i), ("c_proj", i, h)]
        if self.family == NEOX:
            return [("query_key_value", h, 3 * h), ("dense", h, h), ("dense_h_to_4h", h, i), ("dense_4h_to_h", i, h)]
        if self.family == BERT:
            return [("query", h, h), ("key", h, h), ("value", h, h), ("dense", h, h), ("dense", h, i), ("dense", i, h)]
        return [
            ("q_proj", h, q),
            ("k_proj", h, kv),
            ("v_proj", h, kv),
            ("o_proj", q, h),
            ("gate_proj", h, i),
            ("up_proj", h, i),
            ("down_proj", i, h),
        ]

    @property
    def linear_params_per_layer(self) -> int:
        weights = sum(n_in * n_out for _, n_in, n_out in self.linears())
        if self.family == "llama":
            bias = 2 * self.num_kv_heads * self.dim_per_head + self.num_heads * self.dim_per_head
            return weights + (bias if self.qkv_bias else 0)
        return weights + sum(n_out for _, _, n_out in self.linears())  # every linear has a bias

    @property
    def norm_params_per_layer(self) -> int:
        # RMSNorm: a weight; LayerNorm (GPT-2, NeoX, BERT): weight and bias
        return 2 * self.hidden_size if self.family == "llama" else 4 * self.hidden_size

    @property
    def embedding_params(self) -> int:
        return (self.vocab_size + self.max_positions) * self.hidden_size

    @property
    def head_params(self) -> int:
        """The output layer (absent when tied to the input embedding)."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def quantizable_params(self) -> int:
        """What bitsandbytes quantizes: the decoder layers' linear weights (not embeddings, norms, head)."""
        return self.num_layers * sum(n_in * n_out for _, n_in, n_out in self.linears())

    def params(self, classifier: bool = False) -> int:
        """All parameters: a causal LM, or a one-output sequence classifier (score head, no LM head)."""
        final_norm = self.hidden_size if self.family == "llama" else 2 * self.hidden_size
        body = self.embedding_params + self.num_layers * (self.linear_params_per_layer + self.norm_params_per_layer)
        head = self.hidden_size if classifier else self.head_params
        return body + final_norm + head

    def layer_params(self) -> int:
        return self.linear_params_per_layer + self.norm_params_per_layer


def from_config(config: dict[str, Any]) -> Architecture:
    """An Architecture from a transformers config.json (text_config for multimodal wrappers)."""
    config = config.get("text_config") or config
    model_type = str(config.get("model_type", "llama"))
    family = {GPT2: GPT2, NEOX: NEOX}.get(model_type, BERT if model_type in BERT_LIKE else "llama")
    hidden = int(config.get("hidden_size") or config.get("n_embd") or 0)
    heads = int(config.get("num_attention_heads") or config.get("n_head") or 0)
    if not hidden or not heads:
        raise ValueError(f"config.json (model_type {model_type}) has no hidden size or head count")
    inner = config.get("intermediate_size") or config.get("n_inner") or 4 * hidden
    return Architecture(
        hidden_size=hidden,
        num_layers=int(config.get("num_hidden_layers") or config.get("n_layer") or 0),
        num_heads=heads,
        num_kv_heads=int(config.get("num_key_value_heads") or heads),
        intermediate_size=int(inner),
        vocab_size=int(config["vocab_size"]),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", family in (GPT2, BERT))),
        family=family,
        head_dim=config.get("head_dim"),
        qkv_bias=bool(config.get("attention_bias", model_type == "qwen2")),
        max_positions=int(config.get("n_positions") or config.get("max_position_embeddings") or 0)
        if family in (GPT2, BERT)
        else 0,
    )


def _llama(h: int, layers: int, heads: int, kv: int, inner: int, vocab: int, **extra: Any) -> Architecture:
    return Architecture(h, layers, heads, kv, inner, vocab, **extra)


# Public config.json values. Names are matched case-insensitively.
CATALOG: dict[str, Architecture] = {
    "builtin:tiny-llama": _llama(128, 2, 8, 8, 256, 355, tie_word_embeddings=True),
    "meta-llama/Llama-2-7b-hf": _llama(4096, 32, 32, 32, 11008, 32000),
    "meta-llama/Llama-2-13b-hf": _llama(5120, 40, 40, 40, 13824, 32000),
    "meta-llama/Llama-2-70b-hf": _llama(8192, 80, 64, 8, 28672, 32000),
    "meta-llama/Meta-Llama-3-8B": _llama(4096, 32, 32, 8, 14336, 128256),
    "meta-llama/Meta-Llama-3-70B": _llama(8192, 80, 64, 8, 28672, 128256),
    "meta-llama/Llama-3.1-8B": _llama(4096, 32, 32, 8, 14336, 128256),
    "meta-llama/Llama-3.1-70B": _llama(8192, 80, 64, 8, 28672, 128256),
    "meta-llama/Llama-3.2-1B": _llama(2048, 16, 32, 8, 8192, 128256, tie_word_embeddings=True, head_dim=64),
    "meta-llama/Llama-3.2-3B": _llama(3072, 28, 24, 8, 8192, 128256, tie_word_embeddings=True, head_dim=128),
    "mistralai/Mistral-7B-v0.1": _llama(4096, 32, 32, 8, 14336, 32000),
    "Qwen/Qwen2.5-0.5B": _llama(896, 24, 14, 2, 4864, 151936, tie_word_embeddings=True, qkv_bias=True),
    "Qwen/Qwen2.5-7B": _llama(3584, 28, 28, 4, 18944, 152064, qkv_bias=True),
    "Qwen/Qwen2.5-72B": _llama(8192, 80, 64, 8, 29568, 152064, qkv_bias=True),
    "HuggingFaceTB/SmolLM2-135M": _llama(576, 30, 9, 3, 1536, 49152, tie_word_embeddings=True),
    "gpt2": Architecture(768, 12, 12, 12, 3072, 50257, True, GPT2, max_positions=1024),
    "EleutherAI/pythia-1b": Architecture(2048, 16, 8, 8, 8192, 50304, False, NEOX),
}
# Instruction-tuned variants share their base's architecture.
for _base, _chat in [
    ("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-chat-hf"),
    ("meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-13b-chat-hf"),
    ("meta-llama/Llama-2-70b-hf", "meta-llama/Llama-2-70b-chat-hf"),
    ("meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B-Instruct"),
    ("meta-llama/Meta-Llama-3-70B", "meta-llama/Meta-Llama-3-70B-Instruct"),
    ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct"),
    ("meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.1-70B-Instruct"),
    ("mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.2"),
    ("Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct"),
]:
    CATALOG[_chat] = CATALOG[_base]
_BY_LOWER = {name.lower(): arch for name, arch in CATALOG.items()}


def hub_cache_dirs(env: dict[str, str] | None = None) -> list[Path]:
    """Where huggingface_hub keeps downloaded models ($HF_HUB_CACHE, $HF_HOME/hub, the default)."""
    env = dict(os.environ) if env is None else env
    found = []
    if env.get("HF_HUB_CACHE"):
        found.append(Path(env["HF_HUB_CACHE"]))
    if env.get("HF_HOME"):
        found.append(Path(env["HF_HOME"]) / "hub")
    found.append(Path(env.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface" / "hub")
    return found


def _read_config(path: Path) -> Architecture | None:
    try:
        return from_config(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lookup(name: str, cache_dirs: Iterable[Path] = ()) -> tuple[Architecture, str] | None:
    """(architecture, where it came from) for a model name, or None when nothing knows it."""
    local = Path(name).expanduser()
    if (local / "config.json").is_file():
        found = _read_config(local / "config.json")
        if found:
            return found, f"{local}/config.json"
    if "/" in name and not name.startswith(("/", ".", "~")):
        for cache in cache_dirs:
            snapshots = cache / f"models--{name.replace('/', '--')}" / "snapshots"
            for config in sorted(snapshots.glob("*/config.json")) if snapshots.is_dir() else []:
                found = _read_config(config)
                if found:
                    return found, "hub cache"
    known = _BY_LOWER.get(name.lower())
    return (known, "built-in table") if known else None
