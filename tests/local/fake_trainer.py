"""A stand-in for `python -m rlhf_trainer <stage> --config FILE` that behaves like the real one
towards `rlhf run`: progress lines, result.json, checkpoints, SIGTERM, exit codes. Fast.

Controlled by environment variables (the tests set them):
- FAKE_FAIL: JSON {stage: n}: the first n attempts of that stage fail (result.json, exit 1).
- FAKE_STEPS: steps per stage (default 3); FAKE_STEP_SECONDS: time per step (default 0).
- FAKE_NUMBERS: JSON {stage: {name: value}}: extra numbers in every progress line (e.g. kl).
- FAKE_HANG: JSON {stage: step}: the first attempt hangs after that step (a stuck collective:
  no more lines, SIGTERM ignored).
A step's "checkpoint" is a directory stamped with the config's identity, as the real trainer
stamps its checkpoints; a new attempt resumes after the last one of the same identity (others
are left where they are and not counted) and result.json carries the identity.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import yaml
from rlhf_api.progress import emit
from rlhf_api.result import StageResult, write_result
from rlhf_api.trainer_job import TrainerJobConfig


def main() -> int:
    stage, config = sys.argv[-3], sys.argv[-1]
    cfg = TrainerJobConfig.model_validate(yaml.safe_load(Path(config).read_text()))
    out = Path(cfg.output_dir)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    calls = Path(cfg.work_dir).parent / "calls.txt"
    with open(calls, "a") as f:
        f.write(stage + "\n")
    attempt = sum(1 for line in calls.read_text().split() if line == stage)
    steps = int(os.environ.get("FAKE_STEPS", "3"))
    pause = float(os.environ.get("FAKE_STEP_SECONDS", "0"))
    stamp = cfg.identity.model_dump_json() if cfg.identity else ""
    done = sorted(
        int(p.name.split("-")[1])
        for p in (out / "checkpoints").glob("checkpoint-*")
        if (p / "identity.json").is_file() and (p / "identity.json").read_text() == stamp
    )
    start = done[-1] if done else 0
    numbers = json.loads(os.environ.get("FAKE_NUMBERS", "{}")).get(stage, {})
    hang = json.loads(os.environ.get("FAKE_HANG", "{}")).get(stage)
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))

    def result(status: str, step: int, **extra: object) -> StageResult:
        return StageResult(
            stage=stage,  # type: ignore[arg-type]
            status=status,  # type: ignore[arg-type]
            output_path=cfg.output_dir,
            steps=step,
            planned_steps=steps,
            resumed_from_step=start or None,
            identity=cfg.identity,
            **extra,  # type: ignore[arg-type]
        )

    for step in range(start + 1, steps + 1):
        time.sleep(pause)
        checkpoint = out / "checkpoints" / f"checkpoint-{step}"
        checkpoint.mkdir(exist_ok=True)
        (checkpoint / "identity.json").write_text(stamp)
        emit(stage, step=step, max_steps=steps, loss=1.0 / step, **numbers)
        while hang == step and attempt == 1:
            time.sleep(1)
        if stop["flag"]:
            write_result(
                result("failed", step, preempted=True, message=f"preempted at step {step}"), f"{out}/result.json"
            )
            return 143
    if json.loads(os.environ.get("FAKE_FAIL", "{}")).get(stage, 0) >= attempt:
        print(f"boom in {stage} attempt {attempt}", file=sys.stderr)
        write_result(result("failed", steps, message="dataset.source: no such file"), f"{out}/result.json")
        return 1
    merged = f"{out}/merged"
    write_result(result("succeeded", steps, merged_path=merged, metrics={"task_accuracy": 0.5}), f"{out}/result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
