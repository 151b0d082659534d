"""PPO checkpoints: `<out>/checkpoints/step-N/`, written atomically, resumed from the latest.

A checkpoint holds the trainable weights (LoRA adapter + value head, or the whole policy
under full fine-tuning), the optimizer, KL controller and reward statistics, every process's
RNG states and the step. It is written into a temporary directory and renamed into place,
so a directory named step-N is always complete.

Under fsdp the weights and optimizer state are sharded: every process takes part in gathering
them, rank 0 writes them whole (the weights in the same format as unsharded runs; the optimizer
state keyed by parameter name), and on resume every process loads them and keeps its shard.
A checkpoint resumes only under the placement strategy that wrote it (state.json says which).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from rlhf_api.files import fsync_dir, write_text_atomic

from .. import checkpoint_guard, sharding
from .. import distributed as dist
from .engine import PPOEngine

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "state.json"
KEEP_LAST = 2


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_steps(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = STEP_DIR.match(child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete step-N of this attempt's identity (checkpoint_guard)."""
    return checkpoint_guard.resumable(root)


def save_checkpoint(
    root: str | Path, step: int, engine: PPOEngine, extra: dict[str, Any], keep_last: int = KEEP_LAST
) -> Path:
    """Write step-N (all processes call this; rank 0 writes the shared files)."""
    root = Path(root)
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    if dist.rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    torch.save(rng_state(), tmp / f"rng-rank{dist.rank()}.pt")
    model = engine.model
    sharded = sharding.is_sharded(model)
    if sharded:  # collective: every rank gathers, rank 0 keeps
        trainable = sharding.gather_trainable(model)
        engine_state = {**engine.state_dict(), "optimizer": sharding.full_optimizer_state(model, engine.optimizer)}
    elif dist.rank() == 0:
        trainable, engine_state = model.trainable_state_dict(), engine.state_dict()
    if dist.rank() == 0:
        torch.save(trainable, tmp / "trainable.pt")
        torch.save(engine_state, tmp / "engine.pt")
        if isinstance(model.policy, PeftModel) and not sharded:
            model.policy.save_pretrained(str(tmp / "adapter"))  # readable copy of the adapter
    dist.barrier()
    if dist.rank() == 0:
        # The files made durable and stamped with the attempt's identity, then state.json, which
        # marks the directory complete, then one atomic rename (and the directory entry fsynced).
        checkpoint_guard.stamp(tmp)
        state = {"step": step, "world_size": dist.world_size(), "sharded": sharded, **extra}
        write_text_atomic(tmp / STATE_FILE, json.dumps(state, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        fsync_dir(root)
        for _, old in checkpoint_steps(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_checkpoint(path: str | Path, engine: PPOEngine) -> dict[str, Any]:
    """Restore weights, optimizer, controllers and this process's RNG; returns state.json."""
    path = Path(path)
    with open(path / STATE_FILE) as f:
        state: dict[str, Any] = json.load(f)
    model = engine.model
    sharded = sharding.is_sharded(model)
    if bool(state.get("sharded", False)) != sharded:
        written, now = ("fsdp", "ddp") if state.get("sharded") else ("ddp", "fsdp")
        raise ValueError(f"checkpoint {path} was written under strategy {written}: resume it with {written}, not {now}")
    where = "cpu" if sharded else engine.device
    trainable = torch.load(path / "trainable.pt", map_location=where, weights_only=True)
    missing = {n for n, p in sharding.named_parameters(model).items() if p.requires_grad} - set(trainable)
    if missing:
        raise ValueError(f"checkpoint {path} lacks trainable weights {sorted(missing)[:3]}...")
    engine_state = torch.load(path / "engine.pt", map_location=where, weights_only=True)
    if sharded:
        sharding.load_trainable(model, trainable)
        sharding.load_full_optimizer_state(model, engine.optimizer, engine_state["optimizer"])
        engine_state["optimizer"] = engine.optimizer.state_dict()  # restored just above
    else:
        model.load_state_dict(trainable, strict=False)
    engine.load_state_dict(engine_state)
    rng_file = path / f"rng-rank{dist.rank()}.pt"
    if rng_file.is_file():
        # Our own file; holds python/numpy RNG tuples, which weights_only cannot load.
        set_rng_state(torch.load(rng_file, weights_only=False))
    return state
