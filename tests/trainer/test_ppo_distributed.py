"""Two processes under torchrun (gloo on CPU): gradients are all-reduced, replicas stay equal."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.processes import subprocess_env

WORKER = textwrap.dedent(
    """
    import hashlib, json, sys
    import torch
    from peft import LoraConfig, get_peft_model
    from rlhf_api.stages.ppo import PPOTrainingConfig
    from rlhf_trainer import distributed as dist
    from rlhf_trainer.ppo.engine import PPOEngine
    from rlhf_trainer.ppo.loop import train_loop
    from rlhf_trainer.ppo.value_head import ActorCritic, ValueHead
    from tests.support.tiny_models import tiny_llama, token_share_reward, word_tokenizer

    torch.set_num_threads(1)
    dist.init_from_env()
    out = sys.argv[1]
    words = [f"w{i}" for i in range(12)]
    tokenizer = word_tokenizer(words)
    torch.manual_seed(0)
    base = tiny_llama(len(tokenizer), initializer_range=0.2)
    # Different adapter init per rank: the engine must broadcast rank 0's weights.
    torch.manual_seed(dist.rank())
    policy = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"))
    model = ActorCritic(policy, ValueHead(base.config.hidden_size))
    reward = token_share_reward(tokenizer)
    cfg = PPOTrainingConfig(steps=2, batch_size=4, mini_batch_size=2, ppo_epochs=1,
                            learning_rate=1e-2, min_new_tokens=2, max_new_tokens=3, save_steps=1)
    engine = PPOEngine(model, tokenizer, reward, cfg)
    initial = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    outcome = train_loop(engine, [" ".join(words[i:i + 2]) for i in range(10)], out, seed=3,
                         tensorboard=False)
    state = model.trainable_state_dict()
    digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()
    changed = any(not torch.equal(initial[k], state[k]) for k in state)
    with open(f"{out}/rank{dist.rank()}.json", "w") as f:
        json.dump({"digest": digest, "changed": changed, "stats": outcome["stats"]}, f)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_gloo_run_keeps_replicas_identical(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = subprocess_env()
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        str(script),
        str(tmp_path),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["changed"] and ranks[1]["changed"]
    assert ranks[0]["digest"] == ranks[1]["digest"]
    # Stats are reduced over both processes, so both report the same numbers.
    assert ranks[0]["stats"]["reward_mean"] == ranks[1]["stats"]["reward_mean"]
    state = json.loads((tmp_path / "checkpoints" / "step-2" / "state.json").read_text())
    assert state["world_size"] == 2
    assert (tmp_path / "checkpoints" / "step-2" / "rng-rank1.pt").is_file()
