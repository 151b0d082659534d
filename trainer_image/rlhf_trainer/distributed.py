"""The little torch.distributed the trainer needs: the PPO engine's gradient averaging and
collectives, and the preemption agreement (`preemption.stop_agreed`). A no-op in a single process.

Under torchrun each process samples its own prompts; gradients of the (small) trainable
set are all-reduced before every optimizer step, so replicas stay identical without
wrapping the model in DDP (generation and the adapter-disabled reference pass use the
plain module anyway). Under fsdp the trainable parameters are FSDP2 shards (DTensors), whose
gradients FSDP itself reduces: the helpers here leave them alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from rlhf_api.stage_config import Strategy
from torch import nn
from torch.distributed.tensor import DTensor

from . import placement


def init_from_env(strategy: Strategy = "ddp", offload: bool = False) -> torch.device:
    """Select this rank's GPU and join the process group torchrun describes (gloo on CPU, nccl
    on GPU), once; returns this process's device."""
    return torch.device(placement.device(placement.init_distributed(strategy, offload)))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return values
    out = values.detach().clone().float()
    dist.all_reduce(out)
    return out / world_size()


def all_reduce_max(value: int) -> int:
    """The largest of an int over processes (the sampler's step count under FSDP, whether any
    rank received SIGTERM). Under nccl (alone or beside gloo) the tensor is on this rank's GPU."""
    if not is_distributed():
        return value
    on_gpu = "nccl" in str(dist.get_backend()).lower()
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else None
    out = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return int(out)


def all_reduce_min(value: int) -> int:
    """The smallest of an int over processes (the sampler's 'every rank is done' under FSDP)."""
    return -all_reduce_max(-value)


def all_gather_cat(values: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D tensor of the same length from every process."""
    if not is_distributed():
        return values
    parts = [torch.empty_like(values) for _ in range(world_size())]
    dist.all_gather(parts, values.contiguous())
    return torch.cat(parts)


def _replicated(params: Sequence[nn.Parameter]) -> list[nn.Parameter]:
    return [p for p in params if not isinstance(p, DTensor)]


def average_gradients(params: Sequence[nn.Parameter]) -> None:
    """Mean of the gradients over processes, in one flat all-reduce (FSDP shards excepted)."""
    params = _replicated(params)
    if not is_distributed() or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).clone()
        offset += n


def broadcast_parameters(params: Sequence[nn.Parameter]) -> None:
    """Start every replica from rank 0's trainable weights (FSDP shards excepted: each rank
    holds a different part of them)."""
    params = _replicated(params)
    if not is_distributed():
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()
