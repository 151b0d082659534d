"""Our PPO engine against the real TRL 1.12 PPOTrainer, side by side on the same model and batch.

    python benchmarks/ppo_vs_trl.py                      # LoRA and full FT, 25M Llama, 3 reps
    python benchmarks/ppo_vs_trl.py --cases large-lora   # ~150M Llama, where weights dominate memory
    python benchmarks/ppo_vs_trl.py --cases lora --ours-tree /tmp/old-checkout   # another checkout

TRL removed its PPOTrainer after 1.12 (`trl.experimental.ppo`), and trl 1.12 cannot share an
environment with the trl our stages use, so the benchmark builds (once, cached under
$RLHF_BENCH_CACHE or ~/.cache/rlhf-bench) a virtualenv with trl==1.12.0 and the torch,
transformers, peft and accelerate versions installed here. It also builds (once) the model,
tokenizer, reward model and reward adapter on disk, from configs (random weights; nothing is
downloaded), and then runs each side in its own process, alternating sides per repetition:

- ours: policy + LoRA (or full fine-tuning with a frozen reference copy), value head on the
  policy's hidden states, reference = adapter disabled, and by default the reward model as a
  LoRA adapter + score head on the same base (`--ours-reward separate`: the same separate
  reward model TRL gets).
- TRL:  PPOTrainer with peft_config (LoRA) or a ref_model (full FT), a separate value model
  and a separate reward model (both sequence classifiers, as in TRL's PPO example).

Same batch: B prompts of P tokens, exactly N new tokens (no stop token), M mini-batches,
E PPO epochs, one thread per process. Printed per side: s/update (warm-up updates excluded),
generated tokens/s, peak RSS (the child's ru_maxrss from wait4) and RSS above imports (peak
minus the RSS after the side's imports), the machine's 1-minute load before and after every
run, and the ours/TRL ratios of the medians. CPU seconds per update (process time, one thread)
are printed beside wall time: on a loaded machine they are the steadier of the two.
Targets (printed, not asserted): time per update <= 0.5x TRL's; with the reward adapter on
the shared base, RSS above imports <= 0.35x TRL's and, on the large model, peak RSS <= 0.5x.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRL_VERSION = "1.12.0"
SIDES = ("ours", "trl")


@dataclass(frozen=True)
class Case:
    name: str
    lora: bool
    vocab: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    batch: int
    mini_batches: int
    epochs: int
    prompt_tokens: int
    new_tokens: int
    updates: int
    warmup: int

    @property
    def model_key(self) -> str:
        return f"v{self.vocab}-h{self.hidden}-l{self.layers}-a{self.heads}-i{self.intermediate}"


CASES = {
    "lora": Case("lora", True, 6000, 512, 6, 8, 1376, 16, 4, 2, 24, 24, updates=3, warmup=1),
    "full": Case("full", False, 6000, 512, 6, 8, 1376, 16, 4, 2, 24, 24, updates=3, warmup=1),
    "large-lora": Case("large-lora", True, 32000, 768, 14, 12, 2048, 8, 2, 2, 24, 24, updates=1, warmup=1),
}


# -- environment and assets (parent, our venv) --------------------------------------------------
def cache_root() -> Path:
    return Path(os.environ.get("RLHF_BENCH_CACHE", Path.home() / ".cache" / "rlhf-bench"))


def ensure_trl_venv() -> Path:
    """A virtualenv with trl==1.12.0 beside our torch/transformers/peft/accelerate versions."""
    from importlib.metadata import version

    pins = {name: version(name) for name in ("torch", "transformers", "peft", "accelerate")}
    pins["torch"] = pins["torch"].split("+")[0]
    venv = cache_root() / f"trl-{TRL_VERSION}"
    marker = venv / "rlhf-bench-pins.json"
    wanted = {**pins, "trl": TRL_VERSION}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return venv / "bin" / "python"
    print(f"building {venv} with {wanted} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # torch first and pinned, or pip resolves a (multi-GB) CUDA build.
    subprocess.run([*pip, f"torch=={pins['torch']}"], check=True)
    others = [f"{name}=={pins[name]}" for name in ("transformers", "peft", "accelerate")]
    subprocess.run([*pip, f"trl=={TRL_VERSION}", *others], check=True)
    marker.write_text(json.dumps(wanted))
    return venv / "bin" / "python"


def installed_versions(python: Path) -> dict[str, str]:
    code = (
        "import json; from importlib.metadata import version; "
        "print(json.dumps({n: version(n) for n in ('torch','transformers','peft','accelerate','trl')}))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def build_assets(case: Case) -> Path:
    """policy/, reward/ (separate classifier) and reward-adapter/ (LoRA SEQ_CLS on policy/)."""
    root = cache_root() / "assets" / case.model_key
    if (root / "done").is_file():
        return root
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    sys.path.insert(0, str(REPO))  # the repo root: tests.support
    from tests.support.tiny_models import SPECIAL_TOKENS, tiny_llama, word_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    tokenizer = word_tokenizer([f"t{i}" for i in range(case.vocab - len(SPECIAL_TOKENS))])
    torch.manual_seed(0)
    policy = tiny_llama(
        case.vocab, case.hidden, case.layers, case.heads, case.intermediate, max_positions=512, initializer_range=0.02
    )
    policy.save_pretrained(root / "policy")
    tokenizer.save_pretrained(root / "policy")
    # The separate reward model (and TRL's value model): the same trunk as a sequence classifier.
    reward = AutoModelForSequenceClassification.from_pretrained(root / "policy", num_labels=1)
    reward.config.pad_token_id = tokenizer.pad_token_id
    reward.save_pretrained(root / "reward")
    tokenizer.save_pretrained(root / "reward")
    # The reward stage's output under LoRA: adapter + score head on the policy's base.
    adapter = get_peft_model(reward, lora_config("SEQ_CLS"))
    with torch.no_grad():
        for name, p in adapter.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    adapter.save_pretrained(root / "reward-adapter")
    (root / "done").write_text("ok")
    return root


def lora_config(task_type: str) -> Any:
    """The same adapters on both sides: r16 on all linear layers, no dropout."""
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type=task_type)


def build_assets_apart(case: Case) -> Path:
    """build_assets in a process of its own: a child's ru_maxrss starts from its parent's RSS at
    fork (Linux keeps the high-water mark across exec), so the parent must stay small."""
    command = [sys.executable, __file__, "--build-assets", json.dumps(asdict(case))]
    out = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if out.returncode != 0:
        raise SystemExit(f"building the models failed:\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def prompts_for(case: Case) -> list[str]:
    words = [f"t{i}" for i in range(case.vocab - 3)]
    return [" ".join(words[(7 * i + 13 * j) % len(words)] for j in range(case.prompt_tokens)) for i in range(64)]


# -- children -------------------------------------------------------------------------------------
def _rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_ours(case: Case, assets: Path, reward_kind: str, threads: int) -> dict[str, Any]:
    import copy

    import torch
    from peft import get_peft_model
    from rlhf_api.stages.ppo import PPOTrainingConfig
    from rlhf_trainer.ppo import reward_scoring as reward_module
    from rlhf_trainer.ppo.engine import PPOEngine
    from rlhf_trainer.ppo.loop import prompts_for_step, seed_everything
    from rlhf_trainer.ppo.value_head import ActorCritic, ValueHead
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(threads)
    baseline = _rss_mib()
    seed_everything(0)
    tokenizer = AutoTokenizer.from_pretrained(assets / "policy")
    policy = AutoModelForCausalLM.from_pretrained(assets / "policy")
    reference = None
    if case.lora:
        policy = get_peft_model(policy, lora_config("CAUSAL_LM"))
    else:
        reference = copy.deepcopy(policy)
    if reward_kind == "adapter":
        host = policy if reference is None else reference
        host, head = reward_module.load_reward_adapter(host, assets / "reward-adapter")
        if reference is not None:  # full fine-tuning: the frozen copy now hosts the reward adapter
            reference = host
        score: Any = reward_module.AdapterScore(host, head, tokenizer.pad_token_id)
    else:
        classifier = AutoModelForSequenceClassification.from_pretrained(assets / "reward")
        score = reward_module.classifier_score(classifier) if hasattr(reward_module, "classifier_score") else classifier
    model = ActorCritic(policy, ValueHead(case.hidden), reference=reference)
    cfg = PPOTrainingConfig(
        steps=case.updates + case.warmup,
        batch_size=case.batch,
        mini_batch_size=case.batch // case.mini_batches,
        ppo_epochs=case.epochs,
        learning_rate=1e-5,
        min_new_tokens=case.new_tokens,
        max_new_tokens=case.new_tokens,
        max_prompt_length=case.prompt_tokens + 1,
        kl={"adaptive": False, "initCoef": 0.05},
    )
    scorer = reward_module.RewardModelScorer(score, tokenizer, batch_size=case.batch)
    no_eos = copy.deepcopy(tokenizer)
    no_eos.eos_token = None  # every response gets exactly new_tokens tokens, as on TRL's side
    engine = PPOEngine(model, no_eos, scorer, cfg)
    prompts = prompts_for(case)
    times, cpu_times, phases = [], [], []
    for step in range(cfg.steps):
        started, cpu_started = time.perf_counter(), time.process_time()
        stats = engine.step(prompts_for_step(prompts, step, cfg.batch_size, seed=0))
        if step >= case.warmup:
            times.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu_started)
            phases.append({k: stats[k] for k in ("rollout_seconds", "experience_seconds", "update_seconds")})
    phase = {k: statistics.mean(p[k] for p in phases) for k in phases[0]}
    return {"times": times, "cpu_times": cpu_times, "baseline_rss_mib": baseline, "phases": phase}


def child_trl(case: Case, assets: Path, threads: int) -> dict[str, Any]:
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    torch.set_num_threads(threads)
    baseline = _rss_mib()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(assets / "policy")
    policy = AutoModelForCausalLM.from_pretrained(assets / "policy")
    reference = None if case.lora else AutoModelForCausalLM.from_pretrained(assets / "policy")
    value_model = AutoModelForSequenceClassification.from_pretrained(assets / "reward", num_labels=1)
    reward_model = AutoModelForSequenceClassification.from_pretrained(assets / "reward", num_labels=1)
    prompts = prompts_for(case)
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in prompts]})
    stamps: list[tuple[float, float]] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            stamps.append((time.perf_counter(), time.process_time()))

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            stamps.append((time.perf_counter(), time.process_time()))

    with tempfile.TemporaryDirectory() as out:
        args = PPOConfig(
            output_dir=out,
            per_device_train_batch_size=case.batch,
            gradient_accumulation_steps=1,
            num_mini_batches=case.mini_batches,
            num_ppo_epochs=case.epochs,
            response_length=case.new_tokens,
            total_episodes=case.batch * (case.updates + case.warmup),
            local_rollout_forward_batch_size=case.batch,
            stop_token=None,
            missing_eos_penalty=None,
            num_sample_generations=0,
            learning_rate=1e-5,
            kl_coef=0.05,
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            save_strategy="no",
            report_to=[],
            logging_steps=1,
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=0,
        )
        peft_config = lora_config("CAUSAL_LM") if case.lora else None
        trainer = PPOTrainer(
            args=args,
            processing_class=tokenizer,
            model=policy,
            ref_model=reference,
            reward_model=reward_model,
            value_model=value_model,
            train_dataset=dataset,
            eval_dataset=dataset,
            peft_config=peft_config,
            callbacks=[Timer()],
        )
        trainer.train()
    durations = [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(stamps)][case.warmup :]
    return {"times": [d[0] for d in durations], "cpu_times": [d[1] for d in durations], "baseline_rss_mib": baseline}


# -- parent ----------------------------------------------------------------------------------------
def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def run_side(side: str, case: Case, assets: Path, args: argparse.Namespace, trl_python: Path) -> dict[str, Any]:
    python = str(trl_python) if side == "trl" else sys.executable
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    if side == "ours":
        tree = Path(args.ours_tree).resolve()
        env["PYTHONPATH"] = os.pathsep.join(str(tree / p) for p in ("api", "operator", "trainer_image"))
    with tempfile.NamedTemporaryFile(suffix=".json") as out, tempfile.TemporaryFile() as log:
        command = [python, __file__, "--child", side, "--case-json", json.dumps(asdict(case))]
        command += ["--assets", str(assets), "--out", out.name, "--threads", str(args.threads)]
        command += ["--ours-reward", args.ours_reward]
        load_before = loadavg()
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        # wait4, not wait: the child's own peak RSS comes with its exit status.
        _, status, usage = os.wait4(process.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            log.seek(0)
            raise SystemExit(f"{side} {case.name} failed with exit code {code}:\n{log.read().decode()[-3000:]}")
        figures: dict[str, Any] = json.loads(Path(out.name).read_text())
    figures["peak_rss_mib"] = usage.ru_maxrss / 1024.0
    figures["above_imports_mib"] = figures["peak_rss_mib"] - figures["baseline_rss_mib"]
    figures["s_per_update"] = statistics.median(figures["times"])
    figures["cpu_s_per_update"] = statistics.median(figures["cpu_times"])
    figures["tokens_per_s"] = case.batch * case.new_tokens / figures["s_per_update"]
    figures["load"] = [load_before, loadavg()]
    return figures


def summarize(case: Case, runs: dict[str, list[dict[str, Any]]], reward_kind: str) -> None:
    params = "LoRA r16 all-linear" if case.lora else "full fine-tuning"
    print(
        f"\n== {case.name}: Llama {case.model_key}, {params}; batch {case.batch} x ({case.prompt_tokens}+1 prompt "
        f"+ {case.new_tokens} new tokens), {case.mini_batches} mini-batches, {case.epochs} epochs; "
        f"ours' reward model: {reward_kind}"
    )
    header = f"{'side':<6}{'s/update':>24}{'CPU s/update':>14}{'tokens/s':>10}{'peak RSS MiB':>20}"
    header += f"{'above imports MiB':>22}"
    header += "  load (1-min, before/after)"
    print(header)
    medians: dict[str, dict[str, float]] = {}
    for side, results in runs.items():
        if not results:
            continue
        per_run = [r["s_per_update"] for r in results]
        peak = [r["peak_rss_mib"] for r in results]
        above = [r["above_imports_mib"] for r in results]
        cpu = [r["cpu_s_per_update"] for r in results]
        medians[side] = {
            "cpu": statistics.median(cpu),
            "s": statistics.median(per_run),
            "peak": statistics.median(peak),
            "above": statistics.median(above),
        }
        loads = " ".join(f"{a:.1f}/{b:.1f}" for a, b in (r["load"] for r in results))
        print(
            f"{side:<6}{medians[side]['s']:>8.2f} ({min(per_run):.2f}-{max(per_run):.2f}){'':>4}"
            f"{medians[side]['cpu']:>14.2f}"
            f"{case.batch * case.new_tokens / medians[side]['s']:>10.1f}"
            f"{medians[side]['peak']:>10.0f} ({min(peak):.0f}-{max(peak):.0f})"
            f"{medians[side]['above']:>11.0f} ({min(above):.0f}-{max(above):.0f})  {loads}"
        )
        if side == "ours" and "phases" in results[0]:
            phases = {k: statistics.mean(r["phases"][k] for r in results) for k in results[0]["phases"]}
            print("       ours per phase (s/update): " + ", ".join(f"{k[:-8]} {v:.2f}" for k, v in phases.items()))
    if set(medians) == set(SIDES):
        ours, trl = medians["ours"], medians["trl"]
        print(
            f"ours/TRL: time per update {ours['s'] / trl['s']:.2f} "
            f"(target <= 0.5; CPU time {ours['cpu'] / trl['cpu']:.2f}), "
            f"peak RSS {ours['peak'] / trl['peak']:.2f}"
            + (" (target <= 0.5)" if case.name.startswith("large") else "")
            + f", RSS above imports {ours['above'] / trl['above']:.2f}"
            + (" (target <= 0.35)" if reward_kind == "adapter" else "")
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["lora", "full"])
    parser.add_argument("--reps", type=int, default=3, help="Runs per side and case (alternating sides).")
    parser.add_argument("--updates", type=int, help="Measured updates per run (default: per case).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process.")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--ours-reward", choices=("adapter", "separate"), default="adapter")
    parser.add_argument("--ours-tree", default=str(REPO), help="Checkout whose engine runs as 'ours'.")
    parser.add_argument("--json", help="Also write every run's figures to this file.")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--build-assets", help=argparse.SUPPRESS)
    parser.add_argument("--case-json", help=argparse.SUPPRESS)
    parser.add_argument("--assets", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.build_assets:
        print(build_assets(Case(**json.loads(args.build_assets))))
        return 0
    if args.child:
        case = Case(**json.loads(args.case_json))
        if args.child == "ours":
            figures = child_ours(case, Path(args.assets), args.ours_reward, args.threads)
        else:
            figures = child_trl(case, Path(args.assets), args.threads)
        Path(args.out).write_text(json.dumps(figures))
        return 0

    trl_python = ensure_trl_venv() if "trl" in args.sides else Path(sys.executable)
    if "trl" in args.sides:
        print("TRL side:", json.dumps(installed_versions(trl_python)))
    print("ours side:", json.dumps(installed_versions(Path(sys.executable)) | {"tree": str(args.ours_tree)}))
    everything: dict[str, Any] = {}
    for name in args.cases:
        case = CASES[name]
        if args.updates:
            case = Case(**{**asdict(case), "updates": args.updates})
        assets = build_assets_apart(case)
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in args.sides}
        for rep in range(args.reps):
            order = args.sides if rep % 2 == 0 else list(reversed(args.sides))
            for side in order:
                figures = run_side(side, case, assets, args, trl_python)
                runs[side].append(figures)
                print(
                    f"  {case.name} rep {rep + 1} {side}: {figures['s_per_update']:.2f} s/update "
                    f"({figures['cpu_s_per_update']:.2f} CPU s), "
                    f"peak {figures['peak_rss_mib']:.0f} MiB, above imports {figures['above_imports_mib']:.0f} MiB, "
                    f"load {figures['load'][0]:.1f}->{figures['load'][1]:.1f}",
                    flush=True,
                )
        summarize(case, runs, args.ours_reward)
        everything[name] = runs
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
