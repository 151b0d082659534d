"""Loading, adapting and saving models: the same rules for every stage.

- `builtin:tiny-llama` is materialized once under the run's cache; local paths must exist;
  anything else is a hub id.
- Quantized bases (8-bit, 4-bit NF4) come from bitsandbytes; on CPU the 4-bit layers get the
  gradient-trap fix from DESIGN.md (`fix_bnb_cpu_layout`).
- Dtype, device map and quantization options come from `placement` (each rank loads onto its
  own GPU; never device_map="auto").
- `save_merged` writes `<out>/adapter` and `<out>/merged`; a quantized base is reloaded in full
  precision for the merge (as the stage loaded it: revision, remote code), so the merged model is
  a plain loadable checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from rlhf_api.layout import ADAPTER, MERGED
from rlhf_api.model_config import ModelConfig
from rlhf_api.stage_config import LoraConfig, QuantizationConfig
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from . import builtin_sources, placement
from .errors import StageError

TaskType = Literal["CAUSAL_LM", "SEQ_CLS"]


@dataclass(frozen=True)
class BaseWeights:
    """The model a stage trained on, as the stage loaded it: what save_merged reloads in full
    precision to merge a LoRA adapter trained on a quantized (QLoRA) base."""

    model: ModelConfig
    quantization: QuantizationConfig
    work_dir: str
    field: str = "model"


def _looks_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.exists(name)


def resolve_model_path(model: ModelConfig, work_dir: str, field: str = "model") -> str:
    """A loadable name: the builtin's cache dir, an existing local dir, or a hub id."""
    builtin = builtin_sources.model(model.name)
    if builtin is not None:
        return builtin.materialize(work_dir)
    if builtin_sources.is_builtin(model.name):
        raise StageError(
            f"{field}.name",
            f"unknown builtin model '{model.name}' (available: {builtin_sources.model_names()})",
            kind="config",
        )
    if _looks_local(model.name):
        path = os.path.expanduser(model.name)
        if not os.path.isdir(path):
            raise StageError(f"{field}.name", f"model path '{model.name}' does not exist")
        if not os.path.exists(os.path.join(path, "config.json")):
            raise StageError(f"{field}.name", f"'{model.name}' has no config.json (not a model dir)")
        return path
    return model.name


def _load_kwargs(model: ModelConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": model.trust_remote_code}
    if model.revision and not _looks_local(model.name):
        kwargs["revision"] = model.revision
    return kwargs


def load_saved_tokenizer(model: ModelConfig, work_dir: str, field: str = "model") -> PreTrainedTokenizerBase:
    """The model's tokenizer as saved, special tokens untouched."""
    path = resolve_model_path(model, work_dir, field)
    try:
        return AutoTokenizer.from_pretrained(path, **_load_kwargs(model))
    except (OSError, ValueError) as exc:
        raise StageError(f"{field}.name", f"cannot load a tokenizer from '{model.name}': {exc}") from exc


def load_tokenizer(model: ModelConfig, work_dir: str, field: str = "model") -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (eos, else unk, when it has none)."""
    tokenizer = load_saved_tokenizer(model, work_dir, field)
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise StageError(f"{field}.name", "the tokenizer has no pad, eos or unk token")
        tokenizer.pad_token = fallback
    return tokenizer


def _bnb_config(quant: QuantizationConfig, options: dict[str, Any]) -> Any:
    """A BitsAndBytesConfig from placement's options, or StageError naming quantization.mode
    when bitsandbytes cannot run here."""
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except Exception as exc:  # ImportError, or a native library that fails to load
        raise StageError(
            "quantization.mode",
            f"'{quant.mode}' needs bitsandbytes, which cannot be loaded here ({exc}); use mode none",
        ) from exc
    if not torch.cuda.is_available() and not _bnb_has_cpu_backend():
        raise StageError(
            "quantization.mode",
            f"'{quant.mode}' is not supported on this hardware (no GPU and no bitsandbytes CPU backend)",
        )
    options = dict(options)
    for key in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
        if key in options:
            options[key] = getattr(torch, options[key])
    if options.get("load_in_4bit"):
        options["bnb_4bit_use_double_quant"] = quant.double_quant
    return BitsAndBytesConfig(**options)


def _bnb_has_cpu_backend() -> bool:
    try:
        import bitsandbytes as bnb

        backends = getattr(bnb, "supported_torch_devices", None)
        return backends is None or "cpu" in backends
    except Exception:
        return False


def _load(
    auto_cls: Any,
    model: ModelConfig,
    quant: QuantizationConfig,
    work_dir: str,
    field: str,
    loading: placement.Loading | None,
    **extra: Any,
) -> PreTrainedModel:
    path = resolve_model_path(model, work_dir, field)
    loading = loading or placement.Loading()
    hw = placement.hardware()
    prec = placement.precision(model.dtype, hw, loading.trainer, loading.full_finetune, f"{field}.dtype")
    where = placement.load_kwargs(hw, quant.mode, quant.compute_dtype, prec, loading.strategy)
    kwargs = _load_kwargs(model) | extra
    kwargs["dtype"] = getattr(torch, where["dtype"])
    if "device_map" in where:
        kwargs["device_map"] = where["device_map"]
    if "bnb" in where:
        kwargs["quantization_config"] = _bnb_config(quant, where["bnb"])
    try:
        loaded = auto_cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise StageError(f"{field}.name", f"cannot load model '{model.name}': {exc}") from exc
    if quant.mode != "none":
        fix_bnb_cpu_layout(loaded)
    return loaded  # type: ignore[no-any-return]


def load_causal_lm(
    model: ModelConfig,
    quant: QuantizationConfig,
    work_dir: str,
    field: str = "model",
    loading: placement.Loading | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = load_tokenizer(model, work_dir, field)
    lm = _load(AutoModelForCausalLM, model, quant, work_dir, field, loading)
    _sync_special_tokens(lm, tokenizer)
    return lm, tokenizer


def load_sequence_classifier(
    model: ModelConfig,
    quant: QuantizationConfig,
    work_dir: str,
    field: str = "model",
    loading: placement.Loading | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A one-output sequence classifier (a reward model); pad_token_id set so the last
    non-padding token is scored."""
    tokenizer = load_tokenizer(model, work_dir, field)
    clf = _load(AutoModelForSequenceClassification, model, quant, work_dir, field, loading, num_labels=1)
    clf.config.pad_token_id = tokenizer.pad_token_id
    return clf, tokenizer


def _sync_special_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        if tokenizer.eos_token_id is not None:
            model.generation_config.eos_token_id = tokenizer.eos_token_id


def fix_bnb_cpu_layout(model: torch.nn.Module) -> int:
    """Keep bitsandbytes 4-bit layers in their trainable layout on CPU; returns layers fixed.

    bitsandbytes 0.50 repacks a Linear4bit weight into an inference-only CPU layout the first
    time it runs in eval mode without grad (on CPUs with AVX512-BF16); LoRA gradients computed
    afterwards are silently wrong. Turning the feature off per layer (and undoing a repack that
    already happened) keeps training correct.
    """
    try:
        import bitsandbytes as bnb
    except Exception:
        return 0
    fixed = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            state = getattr(module.weight, "quant_state", None)
            if state is not None and getattr(state, "packing_format_for_cpu", False):
                from bitsandbytes.nn.modules import _convert_weight_packed_for_cpu_inverse

                weight: Any = module.weight
                weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, state)
            fixed += 1
    return fixed


def is_quantized(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def apply_lora(model: PreTrainedModel, lora: LoraConfig, task_type: TaskType) -> Any:
    """Wrap the model with trainable LoRA adapters, or make it fully trainable when disabled."""
    if not lora.enabled:
        if is_quantized(model):
            raise StageError("lora.enabled", "a quantized base can only be trained with LoRA (set lora.enabled: true)")
        model.requires_grad_(True)
        return model
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model, prepare_model_for_kbit_training

    if is_quantized(model):
        # Norms in fp32 and inputs requiring grad; checkpointing is the trainer's decision.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets: str | list[str] = "all-linear" if lora.target_modules == ["all-linear"] else list(lora.target_modules)
    peft_config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        task_type=task_type,
        bias="none",
    )
    try:
        peft_model = get_peft_model(model, peft_config)
    except ValueError as exc:
        raise StageError("lora.targetModules", str(exc)) from exc
    return peft_model


def _unwrap(model: Any) -> Any:
    return model.module if hasattr(model, "module") and not hasattr(model, "peft_config") else model


def save_merged(model: Any, tokenizer: Any, output_dir: str, base: BaseWeights) -> tuple[str, str | None]:
    """Write `<out>/merged` (a plain model + tokenizer) and, for LoRA, `<out>/adapter`.

    Merging mutates `model` (merge_and_unload); call it last. For a quantized base the merge
    happens on a fresh full-precision copy of `base`, in the quantization compute dtype.
    """
    from peft import PeftModel

    model = _unwrap(model)
    merged_path = str(Path(output_dir) / MERGED)
    if not isinstance(model, PeftModel):
        model.save_pretrained(merged_path)
        tokenizer.save_pretrained(merged_path)
        return merged_path, None

    adapter_path = str(Path(output_dir) / ADAPTER)
    model.save_pretrained(adapter_path)
    tokenizer.save_pretrained(adapter_path)

    if is_quantized(model.get_base_model()):
        merged = _merge_into_full_precision(model, adapter_path, base)
    else:
        merged = model.merge_and_unload()
    merged.save_pretrained(merged_path)
    tokenizer.save_pretrained(merged_path)
    return merged_path, adapter_path


def full_precision_kwargs(base: BaseWeights, task: str) -> dict[str, Any]:
    """from_pretrained kwargs for the merge's reload: as the stage loaded the base (revision,
    remote code), unquantized, in the quantization compute dtype."""
    extra: dict[str, Any] = {"num_labels": 1} if task == "SEQ_CLS" else {}
    return _load_kwargs(base.model) | {"dtype": getattr(torch, base.quantization.compute_dtype)} | extra


def reload_base(base: BaseWeights, task: str, dtype: str | None = None) -> Any:
    """The base weights loaded again with full_precision_kwargs, in `dtype` when given (for
    merges, and for the unsharded copy of an FSDP model)."""
    kwargs = full_precision_kwargs(base, task)
    if dtype is not None:
        kwargs["dtype"] = getattr(torch, dtype)
    auto_cls = AutoModelForSequenceClassification if task == "SEQ_CLS" else AutoModelForCausalLM
    return auto_cls.from_pretrained(resolve_model_path(base.model, base.work_dir, base.field), **kwargs)


def _merge_into_full_precision(model: Any, adapter_path: str, base: BaseWeights) -> Any:
    from peft import PeftModel

    task = model.peft_config["default"].task_type
    full = reload_base(base, task)
    if task == "SEQ_CLS":
        full.config.pad_token_id = model.config.pad_token_id
    return PeftModel.from_pretrained(full, adapter_path).merge_and_unload()
