"""The PPO training loop: prompt schedule, logging, checkpoints and resume."""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rlhf_api import layout, progress

from .. import distributed as dist
from .. import preemption
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .engine import PPOEngine

StepCallback = Callable[[int, dict[str, float]], None]

# The fields `rlhf run` displays, in the order the issue lists them.
PROGRESS_FIELDS = (
    "reward_mean",
    "reward_std",
    "kl",
    "kl_coef",
    "entropy",
    "policy_loss",
    "value_loss",
    "clip_frac",
    "response_length",
    "tokens_per_s",
)


@lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(n, generator=generator).tolist())


def prompts_for_step(
    prompts: list[str], step: int, batch_size: int, seed: int, rank: int = 0, world: int = 1
) -> list[str]:
    """This process's prompts at `step`: a pure function of the step, so resume needs no state.

    The stream is a fresh seeded permutation of the prompts per epoch; processes take
    consecutive slices of each global batch.
    """
    if not prompts:
        raise ValueError("no prompts to train on")
    start = (step * world + rank) * batch_size
    picked = []
    for k in range(start, start + batch_size):
        epoch, index = divmod(k, len(prompts))
        picked.append(prompts[_permutation(len(prompts), seed, epoch)[index]])
    return picked


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _tensorboard(output_dir: str | Path, enabled: bool) -> Any:
    if not enabled or dist.rank() != 0:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(Path(output_dir) / layout.LOGS))


def train_loop(
    engine: PPOEngine,
    prompts: list[str],
    output_dir: str | Path,
    seed: int,
    extra_state: dict[str, Any] | None = None,
    tensorboard: bool = True,
    on_step: StepCallback | None = None,
    stage: str = "ppo",
) -> dict[str, Any]:
    """Run cfg.steps PPO iterations, resuming from the latest checkpoint under output_dir.

    After SIGTERM (see preemption): checkpoint at the step just done, then raise Preempted.

    `extra_state` (JSON-able) is stored in every checkpoint and returned from the one resumed,
    so a stage can keep facts like the accuracy measured before training. Returns
    {"stats": last step's stats, "extra": extra state, "resumed_from": step or None}.
    """
    cfg = engine.cfg
    root = Path(output_dir) / layout.CHECKPOINTS
    extra = dict(extra_state or {})
    last_stats: dict[str, float] = {}
    start, resumed_from = 0, None
    checkpoint = latest_checkpoint(root)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, engine)
        if state.get("world_size", 1) != dist.world_size():
            raise ValueError(
                f"checkpoint {checkpoint} was written by {state.get('world_size')} processes, "
                f"this run has {dist.world_size()}: the prompt schedule would differ"
            )
        start = resumed_from = int(state["step"])
        extra = dict(state.get("extra", extra))
        last_stats = dict(state.get("stats", {}))
    else:
        # Each process samples differently; trainable weights were broadcast from rank 0.
        seed_everything(seed + 7919 * dist.rank())

    writer = _tensorboard(output_dir, tensorboard)
    try:
        for step in range(start, cfg.steps):
            batch = prompts_for_step(prompts, step, cfg.batch_size, seed, dist.rank(), dist.world_size())
            last_stats = engine.step(batch)
            done = step + 1
            if dist.rank() == 0 and (done % cfg.logging_steps == 0 or done == cfg.steps):
                progress.emit(
                    stage,
                    step=done,
                    max_steps=cfg.steps,
                    **{k: round(last_stats[k], 6) for k in PROGRESS_FIELDS},
                )
                if writer is not None:
                    for key, value in last_stats.items():
                        writer.add_scalar(f"ppo/{key}", value, done)
                    writer.flush()
            if on_step is not None:
                on_step(done, last_stats)
            stop = preemption.stop_agreed()  # every rank, every step: all stop at the same step
            if stop or done % cfg.save_steps == 0 or done == cfg.steps:
                save_checkpoint(root, done, engine, {"extra": extra, "stats": last_stats})
            if stop:
                raise preemption.Preempted(done, cfg.steps, resumed_from)
    finally:
        if writer is not None:
            writer.close()
    return {"stats": last_stats, "extra": extra, "resumed_from": resumed_from}
