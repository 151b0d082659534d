"""The PPO engine on a tiny Llama, one process or sharded with FSDP2 under torchrun.

Importable (the test computes the one-process reference with it) and runnable:
`python -m torch.distributed.run --nproc-per-node=2 ppo_fsdp_worker.py OUT` writes, from rank 0,
OUT/fsdp.json (losses and trained weights of two updates, per arrangement) and OUT/resume.json.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from rlhf_api.stages.ppo import PPOTrainingConfig
from rlhf_trainer import distributed as dist
from rlhf_trainer import sharding
from rlhf_trainer.ppo.engine import PPOEngine
from rlhf_trainer.ppo.loop import train_loop
from rlhf_trainer.ppo.rollout import Rollout
from rlhf_trainer.ppo.value_head import ActorCritic, ValueHead

from tests.support.tiny_models import tiny_llama, token_share_reward, word_tokenizer

WORDS = [f"w{i}" for i in range(12)]
GLOBAL_BATCH, PROMPT, RESPONSE = 8, 3, 4


def tokenizer() -> Any:
    return word_tokenizer(WORDS)


def build(tok: Any, lora: bool) -> ActorCritic:
    torch.manual_seed(0)
    base = tiny_llama(len(tok), initializer_range=0.2)
    if not lora:
        return ActorCritic(base, ValueHead(base.config.hidden_size), reference=copy.deepcopy(base))
    policy = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"))
    return ActorCritic(policy, ValueHead(base.config.hidden_size))


def config(**overrides: Any) -> PPOTrainingConfig:
    values: dict[str, Any] = {
        "steps": 2,
        "batch_size": GLOBAL_BATCH,
        "mini_batch_size": GLOBAL_BATCH,
        "ppo_epochs": 1,
        "learning_rate": 1e-2,
        "min_new_tokens": 2,
        "max_new_tokens": 3,
        # Row-wise experience only (no batch statistics), so that a rank's rows get the same
        # advantages as in the whole batch.
        "whiten_advantages": False,
        "save_steps": 1,
    }
    return PPOTrainingConfig.model_validate({**values, **overrides})


def fixed_rollout(rows: slice) -> Rollout:
    """A deterministic batch of prompt + response ids (no padding, every response token counts)."""
    generator = torch.Generator().manual_seed(11)
    ids = torch.randint(3, 3 + len(WORDS), (GLOBAL_BATCH, PROMPT + RESPONSE), generator=generator)[rows]
    n = ids.shape[0]
    return Rollout(
        prompts=["p"] * n,
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        response_start=PROMPT,
        response_mask=torch.ones(n, RESPONSE, dtype=torch.long),
        responses=["r"] * n,
        response_token_ids=ids[:, PROMPT:].tolist(),
    )


def two_updates(engine: PPOEngine, rows: slice) -> list[dict[str, float]]:
    rollout = fixed_rollout(rows)
    return [engine.update(engine.make_experience(rollout)) for _ in range(2)]


def digest(state: dict[str, torch.Tensor]) -> str:
    return hashlib.sha256(b"".join(state[k].float().numpy().tobytes() for k in sorted(state))).hexdigest()


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_from_env("fsdp")
    rank, world = dist.rank(), dist.world_size()
    tok = tokenizer()
    share = GLOBAL_BATCH // world
    rows = slice(rank * share, (rank + 1) * share)
    results: dict[str, Any] = {}
    for name, lora in (("lora", True), ("full", False)):
        model = sharding.shard_actor_critic(build(tok, lora))
        engine = PPOEngine(model, tok, token_share_reward(tok), config(batch_size=share, mini_batch_size=share))
        stats = two_updates(engine, rows)
        # the loss of the whole batch is the mean of the ranks' (equal token counts)
        losses = [dist.all_reduce_mean(torch.tensor([s["policy_loss"], s["value_loss"]])).tolist() for s in stats]
        weights = sharding.gather_trainable(model)
        results[name] = {"losses": losses, "weights": {k: v.tolist() for k, v in weights.items()}}

    # Resume: 2 steps straight vs 1 step, then a fresh model and engine resuming from disk.
    def run(directory: Path, steps: int) -> str:
        model = sharding.shard_actor_critic(build(tok, lora=True))
        engine = PPOEngine(model, tok, token_share_reward(tok), config(steps=steps, batch_size=2, mini_batch_size=2))
        train_loop(engine, [" ".join(WORDS[i : i + 2]) for i in range(10)], directory, seed=3, tensorboard=False)
        return digest(sharding.gather_trainable(model))

    straight = run(out / "straight", 2)
    run(out / "resumed", 1)
    resumed = run(out / "resumed", 2)
    if rank == 0:
        (out / "fsdp.json").write_text(json.dumps(results))
        (out / "resume.json").write_text(json.dumps({"straight": straight, "resumed": resumed}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
