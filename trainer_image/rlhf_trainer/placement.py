"""Where this process trains and how its models load: one set of rules for every stage.

Pure decisions over a `Hardware` value (what the process sees: GPUs, bf16, its rank), so the
CPU tests cover the GPU cases; `hardware()` and `init_distributed()` are the only I/O.

The rules (DESIGN.md, "GPU placement"):
- torchrun starts one process per GPU; each process uses `cuda:LOCAL_RANK` and must select it
  (`torch.cuda.set_device`) before joining the process group, or every process lands on cuda:0.
- bitsandbytes 8-bit/4-bit weights cannot move after loading: each rank loads its copy onto its
  own GPU (`device_map={"": LOCAL_RANK}`). `device_map="auto"` (one model spread over all GPUs)
  is never used: under a launcher every process would spread its copy over every GPU.
- fsdp: an unquantized model loads on the CPU and FSDP2 moves each rank's shards to its GPU
  (a whole copy per GPU is what fsdp exists to avoid); 8-bit cannot be sharded; 4-bit can when
  its packed weights are stored in the compute dtype (`bnb_4bit_quant_storage`).
- Precision: the table in `rlhf_api.precision`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from rlhf_api.model_config import Dtype
from rlhf_api.precision import Precision, PrecisionError, TrainerKind, resolve
from rlhf_api.stage_config import Strategy
from rlhf_api.stages import kind_of
from rlhf_api.trainer_job import TrainerJobConfig

from .errors import StageError

Quantization = Literal["none", "8bit", "4bit-nf4"]


@dataclass(frozen=True)
class Hardware:
    """What one process sees. `bf16` is native bfloat16 support (Ampere and newer), not emulation."""

    cuda: bool = False
    gpu_count: int = 0
    bf16: bool = False
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def hardware() -> Hardware:
    """This process's Hardware, from torch and the launcher's environment (LOCAL_RANK, WORLD_SIZE)."""
    import torch

    cuda = torch.cuda.is_available()
    return Hardware(
        cuda=cuda,
        gpu_count=torch.cuda.device_count() if cuda else 0,
        # Emulated bf16 (e.g. on a T4) is correct but many times slower: only native counts.
        bf16=cuda and torch.cuda.is_bf16_supported(including_emulation=False),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
    )


# --------------------------------------------------------------------------- devices and groups


def device(hw: Hardware) -> str:
    """The device this process computes on: cuda:LOCAL_RANK on a GPU node, else cpu."""
    if not hw.cuda:
        return "cpu"
    if hw.local_rank >= hw.gpu_count:
        raise StageError(
            "placement.gpusPerWorker",
            f"process LOCAL_RANK={hw.local_rank} has no GPU of its own ({hw.gpu_count} visible): "
            "start one process per GPU (nprocPerNode = gpusPerWorker)",
        )
    return f"cuda:{hw.local_rank}"


def this_device() -> str:
    """device() of this process's hardware."""
    return device(hardware())


def backend(hw: Hardware, strategy: Strategy = "ddp", offload: bool = False) -> str:
    """The process-group backend: nccl between GPUs, gloo on CPU. FSDP with CPU offload moves
    shards between host and GPU, so it needs gloo for the CPU tensors beside nccl."""
    if not hw.cuda:
        return "gloo"
    return "cuda:nccl,cpu:gloo" if strategy == "fsdp" and offload else "nccl"


def select_gpu() -> Hardware:
    """Make this rank's GPU the current device (a no-op without CUDA); every stage does this
    first, so nothing (a library's scratch buffer, a process group) lands on cuda:0 by default."""
    import torch

    hw = hardware()
    if hw.cuda:
        torch.cuda.set_device(device(hw))
    return hw


def init_distributed(strategy: Strategy = "ddp", offload: bool = False) -> Hardware:
    """Select this rank's GPU, then join the process group torchrun describes (once).

    The order matters: `set_device` before `init_process_group`, or NCCL binds every rank to cuda:0.
    """
    import torch.distributed as dist

    hw = select_gpu()
    if hw.distributed and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend=backend(hw, strategy, offload))
    return hw


# --------------------------------------------------------------------------- precision


def precision(
    requested: Dtype, hw: Hardware, trainer: TrainerKind, full_finetune: bool, field: str = "model.dtype"
) -> Precision:
    """This process's precision from the table in `rlhf_api.precision` (the operator's memory
    estimate reads the same table); an impossible choice is a StageError naming `field`."""
    try:
        return resolve(requested, hw.cuda, hw.bf16, trainer, full_finetune)
    except PrecisionError as exc:
        raise StageError(field, str(exc)) from exc


# --------------------------------------------------------------------------- loading


def load_kwargs(
    hw: Hardware,
    quantization: Quantization,
    compute_dtype: str,
    prec: Precision,
    strategy: Strategy = "ddp",
) -> dict[str, Any]:
    """`from_pretrained` placement kwargs: `dtype` (a name), `device_map` when the model loads
    straight onto this rank's GPU, and `bnb` (BitsAndBytesConfig kwargs) for a quantized base.
    8-bit under fsdp never comes here: the config's validation refuses it (rlhf_api.rules)."""
    if quantization != "none" and hw.cuda and not hw.bf16 and compute_dtype == "bfloat16":
        raise StageError("quantization.computeDtype", "bfloat16 is not native on this GPU: use float32")
    kwargs: dict[str, Any] = {"dtype": prec.load_dtype}
    if quantization != "none":
        # Non-quantized parts (norms, embeddings) stay in fp32 on CPU: bf16 there is slow and lossy.
        kwargs["dtype"] = prec.load_dtype if hw.cuda else "float32"
        kwargs["bnb"] = _bnb_kwargs(quantization, compute_dtype, strategy)
    if hw.cuda and (strategy == "ddp" or quantization != "none"):
        # Quantized weights are made on the GPU and cannot move; under ddp every rank wants its
        # whole copy there anyway. An unquantized fsdp model stays on the CPU until sharded.
        kwargs["device_map"] = {"": hw.local_rank}
    return kwargs


def _bnb_kwargs(quantization: Quantization, compute_dtype: str, strategy: Strategy) -> dict[str, Any]:
    if quantization == "8bit":
        return {"load_in_8bit": True}
    options: dict[str, Any] = {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_compute_dtype": compute_dtype,
    }
    if strategy == "fsdp":
        # FSDP2 shards floating-point storage only: pack the 4-bit weights into compute-dtype words.
        options["bnb_4bit_quant_storage"] = compute_dtype
    return options


# --------------------------------------------------------------------------- the HF Trainer


def trainer_kwargs(
    hw: Hardware,
    prec: Precision,
    strategy: Strategy,
    offload: bool,
    gradient_checkpointing: bool,
) -> dict[str, Any]:
    """TrainingArguments for placement, precision and sharding (the TRL stages).

    fsdp goes through accelerate's FSDP plugin in FSDP2 mode, one shard group per decoder layer
    (accelerate reads the layer class from the model's `_no_split_modules`). Checkpoints are
    sharded (each rank writes its part; resume reads them back on the same number of ranks).
    Gradient checkpointing stays the model's own, not FSDP's activation checkpointing: that one
    wraps every layer, and transformers then writes a PEFT model's sharded checkpoint with no
    weights in it (measured: a resume silently restarted the adapter from scratch).
    """
    kwargs: dict[str, Any] = {
        "use_cpu": not hw.cuda,
        "bf16": prec.amp == "bf16",
        "fp16": prec.amp == "fp16",
        "gradient_checkpointing": gradient_checkpointing,
        "ddp_backend": None if hw.cuda else ("gloo" if hw.distributed else None),
        "ddp_find_unused_parameters": False if hw.distributed else None,
    }
    if strategy == "fsdp" and hw.distributed:
        kwargs["fsdp"] = True
        kwargs["fsdp_config"] = {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "reshard_after_forward": True,
            "cpu_offload": offload,
            "state_dict_type": "SHARDED_STATE_DICT",
        }
    return kwargs


def fsdp_on_cpu(hw: Hardware, strategy: Strategy) -> bool:
    """fsdp across CPU processes (gloo): FSDP2 runs there, accelerate needs `accelerate_fsdp_on_cpu`."""
    return strategy == "fsdp" and hw.distributed and not hw.cuda


def accelerate_fsdp_on_cpu(hw: Hardware, strategy: Strategy) -> dict[str, Any]:
    """Let accelerate's FSDP plugin run on CPU processes (gloo), as FSDP2 itself does; returns the
    TrainingArguments kwargs that make the Trainer keep the state configured here.

    accelerate 1.15 turns its FSDP plugin on only for accelerator devices: with gloo it settles on
    MULTI_CPU and silently wraps the model in DDP instead. Creating the process state here, marked
    multi-device, before the Trainer builds its Accelerator makes it take the FSDP path (measured:
    the same per-step losses and gradient norms as one process). A no-op unless `fsdp_on_cpu`.
    """
    if not fsdp_on_cpu(hw, strategy):
        return {}
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    state = PartialState(cpu=True, backend="gloo")
    if state.distributed_type == DistributedType.MULTI_CPU:
        state.distributed_type = DistributedType.MULTI_GPU
    # Without this, TrainingArguments resets the process state it finds.
    return {"accelerator_config": {"use_configured_state": True}}


@dataclass(frozen=True)
class Loading:
    """What a stage tells the loader beyond the model and its quantization."""

    strategy: Strategy = "ddp"
    trainer: TrainerKind = "trl"
    full_finetune: bool = False

    @classmethod
    def for_job(cls, cfg: TrainerJobConfig) -> Loading:
        return cls(
            strategy=cfg.strategy,
            trainer=kind_of(cfg.stage).trainer,
            full_finetune=cfg.section.trains_all_weights(),
        )


def peak_gpu_memory() -> dict[str, float]:
    """{"peak_gpu_memory_gib": ...} of this process's GPU (torch.cuda.max_memory_allocated), or {}."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {"peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30}
