"""The little torch.distributed the PPO engine needs (a no-op in a single process).

Under torchrun each process samples its own prompts; gradients of the (small) trainable
set are all-reduced before every optimizer step, so replicas stay identical without
wrapping the model in DDP (generation and the adapter-disabled reference pass use the
plain module anyway).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn


def init_from_env() -> None:
    """Join the process group torchrun describes (gloo on CPU, nccl on GPU), once."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


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


def all_gather_cat(values: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D tensor of the same length from every process."""
    if not is_distributed():
        return values
    parts = [torch.empty_like(values) for _ in range(world_size())]
    dist.all_gather(parts, values.contiguous())
    return torch.cat(parts)


def average_gradients(params: Sequence[nn.Parameter]) -> None:
    """Mean of the gradients over processes, in one flat all-reduce."""
    if not is_distributed():
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
    """Start every replica from rank 0's trainable weights."""
    if not is_distributed():
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()
