"""GPU smoke run: the quickstart and the DPO quickstart on one GPU, with per-stage figures.

    python benchmarks/gpu_smoke.py                 # needs an NVIDIA GPU (scripts/gpu-smoke.sh)
    python benchmarks/gpu_smoke.py --steps 20      # shorter: every stage capped at 20 steps
    python benchmarks/gpu_smoke.py --allow-cpu     # check the script itself on a CPU machine

Each example runs with `rlhf run` in a fresh work directory, changed only to use the GPU
(`gpusPerWorker: 1`, `model.dtype: auto`, i.e. bf16 where the GPU has it). The table per stage:
wall time (the stage's startedAt -> finishedAt), tokens/s (the trainer's train_tokens_per_second;
PPO: the engine's tokens_per_s, response tokens sampled per second of a whole step) and peak GPU
memory (torch.cuda.max_memory_allocated of the stage's process).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = ["examples/quickstart.yaml", "examples/quickstart-dpo.yaml"]
STEP_FIELDS = {"sft": "maxSteps", "reward": "maxSteps", "dpo": "maxSteps", "ppo": "steps"}


def on_gpu(document: dict[str, Any], steps: int | None) -> dict[str, Any]:
    spec = document["spec"]
    spec["placement"]["gpusPerWorker"] = 1
    spec["model"]["dtype"] = "auto"
    for stage in spec["pipeline"]:
        if steps is not None:
            spec[stage].setdefault("training", {})[STEP_FIELDS[stage]] = steps
    return document


def seconds(result: dict[str, Any]) -> float:
    started, finished = (datetime.fromisoformat(result[k].replace("Z", "+00:00")) for k in ("startedAt", "finishedAt"))
    return (finished - started).total_seconds()


def rows(example: Path, workdir: Path, steps: int | None) -> list[list[str]]:
    document = on_gpu(yaml.safe_load(example.read_text()), steps)
    path = workdir / example.name
    path.write_text(yaml.safe_dump(document))
    done = subprocess.run([sys.executable, "-m", "rlhf_cli.main", "run", str(path), "--workdir", str(workdir)])
    if done.returncode != 0:
        raise SystemExit(f"{example.name}: rlhf run failed ({done.returncode})")
    found = []
    for stage in document["spec"]["pipeline"]:
        result = json.loads((workdir / document["metadata"]["name"] / stage / "result.json").read_text())
        metrics = result.get("metrics", {})
        tokens = metrics.get("train_tokens_per_second", metrics.get("tokens_per_s"))
        peak = metrics.get("peak_gpu_memory_gib")
        found.append(
            [
                example.stem,
                stage,
                f"{seconds(result):.1f}",
                "-" if tokens is None else f"{tokens:,.0f}",
                "-" if peak is None else f"{peak * 1024:.0f}",
                _accuracy(metrics),
            ]
        )
    return found


def _accuracy(metrics: dict[str, float]) -> str:
    """task_accuracy (policy stages) or pair_accuracy (reward), on held-out data."""
    value = metrics.get("task_accuracy", metrics.get("pair_accuracy"))
    return "-" if value is None else f"{value:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="cap every stage at this many steps")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (to check the script)")
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu-smoke: no CUDA device visible (use --allow-cpu to check the script on CPU)", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    table = [["example", "stage", "wall s", "tokens/s", "peak GPU MiB", "accuracy"]]
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        for example in EXAMPLES:
            table += rows(REPO / example, workdir, args.steps)
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    print(f"\ngpu-smoke on {device} (torch {torch.__version__})")
    for row in table:
        print(
            "  ".join(
                cell.rjust(w) if i > 1 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
