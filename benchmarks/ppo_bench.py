"""PPO memory/speed: shared weights (ours) vs a naive arrangement of the same engine.

    python benchmarks/ppo_bench.py            # small defaults, a few minutes on 2 CPU cores

Both arrangements run the same PPO engine on a ~25M-parameter Llama-style model built from a
config (random weights, CPU), with LoRA on the policy:
- shared: one set of base weights; reference = the same weights with the adapter disabled;
  value head on the policy's last hidden states (one forward pass gives logits and values).
- naive:  as classic PPO implementations: the policy, a frozen full copy as the reference,
  and a separate value model with its own trunk (a full copy with its own LoRA).
Each arrangement runs in its own subprocess, so peak RSS (the child's ru_maxrss from
os.wait4) is its own. The reward is a cheap hand-made function (the same for both), so the
figures measure the engine, not a reward model.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

ARRANGEMENTS = ("shared", "naive")


def _rss_mib(kib: int) -> float:
    # Linux reports ru_maxrss in KiB.
    return kib / 1024.0


def _model_config(args: argparse.Namespace) -> dict[str, int]:
    return {
        "vocab_size": args.vocab,
        "hidden_size": args.hidden,
        "num_layers": args.layers,
        "num_heads": args.heads,
        "intermediate_size": args.intermediate,
    }


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """One arrangement in this process; returns its figures."""
    import torch
    from peft import LoraConfig, get_peft_model
    from rlhf_api.stage_config import PPOTrainingConfig
    from rlhf_trainer.ppo.engine import PPOEngine
    from rlhf_trainer.ppo.loop import prompts_for_step, seed_everything
    from rlhf_trainer.ppo.value_head import ActorCritic, ValueHead

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root: tests.support
    from tests.support.tiny_models import SPECIAL_TOKENS, tiny_llama, word_tokenizer

    torch.set_num_threads(args.threads)
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    words = [f"t{i}" for i in range(args.vocab - len(SPECIAL_TOKENS))]
    tokenizer = word_tokenizer(words)
    seed_everything(0)
    base = tiny_llama(max_positions=512, initializer_range=0.02, **_model_config(args))
    n_params = sum(p.numel() for p in base.parameters())
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")

    reference = value_trunk = None
    if args.child == "naive":
        reference = copy.deepcopy(base)
        value_lm = copy.deepcopy(base)
        value_lm.lm_head = torch.nn.Identity()  # a value model has a trunk, not an LM head
        value_trunk = get_peft_model(value_lm, lora).get_base_model().get_decoder()  # type: ignore[operator]
    policy = get_peft_model(base, lora)
    model = ActorCritic(policy, ValueHead(args.hidden), reference=reference, value_trunk=value_trunk)

    favoured = set(range(3, 3 + (args.vocab - 3) // 10))

    def reward(prompts: list[str], responses: list[str], ids: list[list[int]]) -> torch.Tensor:
        return torch.tensor([sum(t in favoured for t in row) / max(len(row), 1) for row in ids])

    cfg = PPOTrainingConfig(
        steps=args.updates + args.warmup,
        batch_size=args.batch_size,
        mini_batch_size=args.mini_batch_size,
        ppo_epochs=args.ppo_epochs,
        learning_rate=1e-4,
        min_new_tokens=args.new_tokens,
        max_new_tokens=args.new_tokens,
        max_prompt_length=args.prompt_tokens,
    )
    engine = PPOEngine(model, tokenizer, reward, cfg)
    # Suppress eos so every response has exactly new_tokens tokens in both arrangements.
    engine.tokenizer = _no_eos(tokenizer)

    seed_everything(1)
    prompts = [" ".join(words[(7 * i + j) % len(words)] for j in range(args.prompt_tokens)) for i in range(64)]
    timings, tokens = [], 0.0
    for step in range(cfg.steps):
        batch = prompts_for_step(prompts, step, cfg.batch_size, seed=0)
        started = time.perf_counter()
        stats = engine.step(batch)
        if step >= args.warmup:
            timings.append(time.perf_counter() - started)
            tokens += stats["response_length"] * cfg.batch_size
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "arrangement": args.child,
        "parameters": n_params,
        "trainable": sum(p.numel() for p in model.trainable_parameters()),
        "seconds_per_update": sum(timings) / len(timings),
        "tokens_per_s": tokens / sum(timings),
        "baseline_rss_mib": _rss_mib(baseline_kib),
        "self_peak_rss_mib": _rss_mib(peak_kib),
    }


def _no_eos(tokenizer: Any) -> Any:
    """A tokenizer copy without eos, so generation never stops early."""
    clone = copy.deepcopy(tokenizer)
    clone.eos_token = None
    return clone


def run_parent(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for arrangement in args.arrangements:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [sys.executable, __file__, "--child", arrangement, "--out", out.name, *_passthrough(args)]
            env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads))
            process = subprocess.Popen(command, env=env)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode != 0:
                raise SystemExit(f"{arrangement} run failed with exit code {process.returncode}")
            with open(out.name) as f:
                figures = json.load(f)
        figures["peak_rss_mib"] = _rss_mib(usage.ru_maxrss)
        figures["model_rss_mib"] = figures["peak_rss_mib"] - figures["baseline_rss_mib"]
        results.append(figures)
    return results


def _passthrough(args: argparse.Namespace) -> list[str]:
    names = (
        "updates",
        "warmup",
        "batch_size",
        "mini_batch_size",
        "ppo_epochs",
        "new_tokens",
        "prompt_tokens",
        "threads",
        "vocab",
        "hidden",
        "layers",
        "heads",
        "intermediate",
    )
    out = []
    for name in names:
        out += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return out


def print_table(results: list[dict[str, Any]]) -> None:
    first = results[0]
    print(
        f"\nPPO benchmark: {first['parameters'] / 1e6:.1f}M-parameter Llama, "
        f"{first['trainable'] / 1e6:.2f}M trainable (shared)"
    )
    header = f"{'arrangement':<12}{'s/update':>10}{'tokens/s':>10}{'peak RSS MiB':>14}{'above import MiB':>18}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['arrangement']:<12}{r['seconds_per_update']:>10.2f}{r['tokens_per_s']:>10.1f}"
            f"{r['peak_rss_mib']:>14.0f}{r['model_rss_mib']:>18.0f}"
        )
    by_name = {r["arrangement"]: r for r in results}
    if set(by_name) >= set(ARRANGEMENTS):
        shared, naive = by_name["shared"], by_name["naive"]
        print(
            f"\nshared/naive: peak RSS {shared['peak_rss_mib'] / naive['peak_rss_mib']:.2f}, "
            f"above import {shared['model_rss_mib'] / naive['model_rss_mib']:.2f}, "
            f"time per update {shared['seconds_per_update'] / naive['seconds_per_update']:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=3, help="Measured PPO updates per arrangement.")
    parser.add_argument("--warmup", type=int, default=1, help="Unmeasured updates first.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mini-batch-size", type=int, default=4)
    parser.add_argument("--ppo-epochs", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--prompt-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--vocab", type=int, default=6000)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=1376)
    parser.add_argument("--arrangements", nargs="+", choices=ARRANGEMENTS, default=list(ARRANGEMENTS))
    parser.add_argument("--json", action="store_true", help="Also print the figures as JSON.")
    parser.add_argument("--child", choices=ARRANGEMENTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = run_child(args)
        with open(args.out, "w") as f:
            json.dump(figures, f)
        return
    results = run_parent(args)
    print_table(results)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
