"""Quickstart benchmark: wall time per stage and task_accuracy per stage over several seeds.

    python benchmarks/quickstart_bench.py --seeds 3            # every quickstart in DEFAULT_EXAMPLES
    python benchmarks/quickstart_bench.py --example examples/quickstart.yaml --seeds 1

Each seed runs the example end to end with `rlhf run` in a fresh work directory, with every
stage's `seed` set to it. Prints a table per example and the seed-to-seed spread, so that the
improvement of the final stage over SFT can be compared with the noise, and the 1-minute load
average before and after each run (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_EXAMPLES = ["examples/quickstart.yaml", "examples/quickstart-dpo.yaml"]
# group-relative RL (issue 11): SFT -> reward -> GRPO, SFT -> RLOO with a verifiable reward
DEFAULT_EXAMPLES += ["examples/quickstart-grpo.yaml", "examples/quickstart-rloo.yaml"]
FINAL_STAGES = ("ppo", "dpo", "grpo", "rloo")
# ReST and RLAIF (issue 11): SFT -> reward -> ReST, SFT -> RLAIF -> DPO
DEFAULT_EXAMPLES += ["examples/quickstart-rest.yaml", "examples/quickstart-rlaif.yaml"]
FINAL_STAGES += ("rest", "kto")
# Reported per stage when present (rlaif: how many pairs the judge wrote, how sure, how right).
STAGE_METRICS = (
    "task_accuracy",
    "pair_accuracy",
    "task_accuracy_before",
    "label_agreement",
    "pairs_written",
    "mean_confidence",
    "reward_on_shared_base",
    "eval_win_rate",
    "first_position_preference",
)


def run_once(example: Path, seed: int, workdir: Path) -> dict[str, Any]:
    document = yaml.safe_load(example.read_text())
    for stage in document["spec"]["pipeline"]:
        document["spec"][stage]["seed"] = seed
    path = workdir / example.name
    path.write_text(yaml.safe_dump(document))
    load_before = _load()
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "rlhf_cli.main", "run", str(path), "--workdir", str(workdir)],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    report = json.loads((workdir / document["metadata"]["name"] / "report.json").read_text())
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
    return {"wall": wall, "report": report, "load": [load_before, _load()]}


def _load() -> float:
    """The 1-minute load average: the machine is shared, so every time is reported beside it."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def _seconds(stage: dict[str, Any]) -> float:
    from datetime import datetime

    start, end = stage.get("startTime"), stage.get("completionTime")
    if not start or not end:
        return float("nan")
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", action="append", help="RLHFRun file(s); default: every quickstart")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (42, 43, ...)")
    parser.add_argument("--first-seed", type=int, default=42, help="the first seed (the examples' own is 42)")
    args = parser.parse_args()
    failed = False
    for example in args.example or DEFAULT_EXAMPLES:
        rows: list[dict[str, Any]] = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            with tempfile.TemporaryDirectory(prefix="rlhf-bench-") as tmp:
                outcome = run_once(REPO / example, seed, Path(tmp))
            report = outcome["report"]
            row: dict[str, Any] = {"seed": seed, "phase": report["phase"], "wall": outcome["wall"]}
            row["load_before"], row["load_after"] = outcome["load"]
            for stage in report["stages"]:
                row[f"{stage['name']}_s"] = _seconds(stage)
                for metric in STAGE_METRICS:
                    if metric in stage.get("metrics", {}):
                        row[f"{stage['name']}.{metric}"] = stage["metrics"][metric]
            rows.append(row)
            failed |= report["phase"] != "Succeeded"
            print(json.dumps(row), flush=True)
        print(f"\n== {example}: {args.seeds} seed(s)")
        keys = [k for k in rows[0] if k not in ("seed", "phase")]
        for key in keys:
            values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
            if not values:
                continue
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"{key:28s} mean {statistics.mean(values):8.3f}  std {spread:7.3f}  values {values}")
        deltas = _improvements(rows)
        for name, values in deltas.items():
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"{name:28s} mean {statistics.mean(values):8.3f}  std {spread:7.3f}  values {values}")
        sft = [r["sft.task_accuracy"] for r in rows if "sft.task_accuracy" in r]
        for name, values in deltas.items():
            if len(sft) > 1:  # the accuracy rule: the gain over SFT beats SFT's seed-to-seed spread
                gain, spread = statistics.mean(values), statistics.stdev(sft)
                print(f"{name}: mean gain {gain:.3f} {'>' if gain > spread else '<='} sft std {spread:.3f}")
    return 1 if failed else 0


def _improvements(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for final in FINAL_STAGES:
        key = f"{final}.task_accuracy"
        values = [r[key] - r["sft.task_accuracy"] for r in rows if key in r and "sft.task_accuracy" in r]
        if values:
            out[f"{final} - sft task_accuracy"] = values
    return out


if __name__ == "__main__":
    sys.exit(main())
