"""FSDP2 for the PPO engine, and a plain copy of any sharded model for evaluation and export.

The TRL stages are sharded by accelerate's FSDP plugin (see `placement.trainer_kwargs`); the
PPO engine shards its own models here with `torch.distributed.fsdp.fully_shard`:
- one shard group per decoder layer (the model's `_no_split_modules`), for the policy and, under
  full fine-tuning, its frozen reference copy;
- the ActorCritic as the root group: embeddings, final norm, output layer and value head;
- `reference_logits`, the sampling loop's `policy_hidden` and `heads`, and the policy's
  `generate` (evaluation) run through the root's FSDP hooks (they are not `forward`); the
  sampling loop steps in sync (rollout `_decode(synced=True)`, as generate's `synced_gpus`), so
  ranks whose samples finish early keep taking part in the all-gathers of the others. Sampling
  under FSDP2 all-gathers every layer for every new token: correct but slower than under ddp.
Evaluation runs on the shards, on every rank; the merged model comes from `unsharded_copy` on
rank 0. Every rank must call the collective functions here (`gather_trainable`,
`unsharded_copy`, `full_optimizer_state`, ...) in the same order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from .modeling import BaseWeights
    from .placement import Loading
    from .ppo.value_head import ActorCritic


def is_sharded(model: nn.Module) -> bool:
    """Whether any parameter of `model` is an FSDP2 shard (a DTensor)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _fsdp_kwargs(offload: bool) -> dict[str, Any]:
    from torch.distributed.fsdp import CPUOffloadPolicy

    return {"offload_policy": CPUOffloadPolicy()} if offload else {}


def _hf_model(model: nn.Module) -> Any:
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def shard_layers(model: nn.Module, offload: bool = False) -> int:
    """fully_shard each decoder layer of a (peft-wrapped) transformers model; returns how many."""
    from torch.distributed.fsdp import fully_shard

    hf = _hf_model(model)
    layer_classes = set(getattr(hf, "_no_split_modules", None) or ())
    if not layer_classes:
        raise ValueError(f"{type(hf).__name__} names no decoder layer class (_no_split_modules): cannot shard it")
    layers = [m for m in hf.modules() if type(m).__name__ in layer_classes]
    for layer in layers:
        fully_shard(layer, **_fsdp_kwargs(offload))
    # transformers' generate() reads this to turn on synced_gpus (all ranks step together).
    hf._is_fsdp_managed_module = True
    return len(layers)


def shard_frozen(model: nn.Module, offload: bool = False) -> nn.Module:
    """Shard an inference-only model (the PPO reward model): layers, then the model as root."""
    from torch.distributed.fsdp import fully_shard

    shard_layers(model, offload)
    fully_shard(model, **_fsdp_kwargs(offload))
    return model


def shard_actor_critic(model: ActorCritic, offload: bool = False) -> ActorCritic:
    """Shard the PPO ActorCritic in place (policy layers, reference layers, then the root)."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    shard_layers(model.policy, offload)
    if model.reference is not None:
        shard_layers(model.reference, offload)
    fully_shard(model, **_fsdp_kwargs(offload))
    register_fsdp_forward_method(model, "reference_logits")
    # The engine's sampling loop calls these instead of forward (trunk with a KV cache, then the
    # heads): each call gathers the root group (embeddings, output layer, value head) first.
    register_fsdp_forward_method(model, "policy_hidden")
    register_fsdp_forward_method(model, "heads")
    # Evaluation samples with model.policy.generate, which bypasses the root's forward: route it
    # through a root method so the root group (embeddings, output layer) is gathered first.
    policy: Any = model.policy
    policy_generate = policy.generate
    object.__setattr__(model, "policy_generate", policy_generate)
    register_fsdp_forward_method(model, "policy_generate")
    object.__setattr__(policy, "generate", model.policy_generate)
    return model


# --------------------------------------------------------------------------- gathering


def named_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters by the names of the unwrapped model (activation checkpointing under FSDP wraps
    each layer and inserts `_checkpoint_wrapped_module.` into the names)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import _CHECKPOINT_PREFIX

    return {name.replace(_CHECKPOINT_PREFIX, ""): param for name, param in model.named_parameters()}


def gather_trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """Collective: the full tensors of `model`'s trainable parameters, on the CPU, by name."""
    from torch.distributed.tensor import DTensor

    state = {}
    for name, param in named_parameters(model).items():
        if param.requires_grad:
            full = param.full_tensor() if isinstance(param, DTensor) else param
            state[name] = full.detach().cpu().clone()
    return state


def load_trainable(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every rank: copy full tensors into (possibly sharded) trainable parameters."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = named_parameters(model)
    unknown = set(state) - set(params)
    if unknown:
        raise ValueError(f"no such parameters: {sorted(unknown)[:3]}")
    with torch.no_grad():
        for name, full in state.items():
            param = params[name]
            if isinstance(param, DTensor):
                shard = distribute_tensor(full.to(param.device, param.dtype), param.device_mesh, param.placements)
                param.copy_(shard)
            else:
                param.copy_(full.to(param.device, param.dtype))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Collective: the optimizer's state with full tensors, keyed by parameter name (rank 0 gets
    it, the other ranks an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return dict(get_optimizer_state_dict(model, optimizer, options=options))


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Every rank, with the same full state: reshard it into the optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def unsharded_copy(model: nn.Module, is_main: bool, base: BaseWeights, loading: Loading) -> Any:
    """Collective: a plain CPU copy of a sharded model on the main process (None elsewhere), for
    the merge there.

    Only the trainable weights travel: the copy reloads the base weights the stage loaded
    (`base`; unquantized, in the quantization compute dtype for a QLoRA base, else in the
    stage's load dtype), re-creates its LoRA adapter and takes the trained weights. Under full
    fine-tuning every weight is trainable.
    """
    from peft import PeftModel, get_peft_model

    from .modeling import reload_base
    from .placement import hardware, precision

    trained = gather_trainable(model)
    if not is_main:
        return None
    hf = _hf_model(model)
    task = "SEQ_CLS" if "SequenceClassification" in type(hf).__name__ else "CAUSAL_LM"
    dtype = None  # quantized: the compute dtype, as a merge
    if base.quantization.mode == "none":
        dtype = precision(base.model.dtype, hardware(), loading.trainer, loading.full_finetune).load_dtype
    copy = reload_base(base, task, dtype)
    copy.config.pad_token_id = hf.config.pad_token_id
    if getattr(hf, "generation_config", None) is not None:
        copy.generation_config = hf.generation_config
    if isinstance(model, PeftModel):
        copy = get_peft_model(copy, model.peft_config["default"])
    missing = set(trained) - set(named_parameters(copy))
    if missing:
        raise ValueError(f"the unsharded copy lacks trained weights {sorted(missing)[:3]}")
    load_trainable(copy, trained)
    return copy
