"""`rlhf run`: the local executor. The same StagePlans as on a cluster, as subprocesses here.

Layout under `<workdir>/<run-name>/` is the volume's layout; a stage whose result.json says
succeeded is not run again, so a rerun resumes (and the trainer resumes a half-done stage from
its own checkpoints). `report.json` has the shape of the RLHFRun status.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import TextIO

import yaml
from rlhf_api import layout, progress
from rlhf_api.result import StageResult, read_result
from rlhf_api.spec import RLHFRun
from rlhf_api.status import RLHFRunStatus, StageStatus, kstatus_conditions

from .plan import StagePlan, plan, run_root

REPORT = "report.json"
STAGE_LOG = "stage.log"


class TrainerMissing(RuntimeError):
    pass


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_trainer() -> None:
    """Fail with a clear message when the training extras (or the stage programs) are absent."""
    for module in ("torch", "transformers", "trl", "peft"):
        if importlib.util.find_spec(module) is None:
            raise TrainerMissing(
                f"rlhf run needs the training extras ({module} is not installed): "
                "pip install torch==2.13.0 && pip install 'rlhf-operator[train]'"
            )
    if importlib.util.find_spec("rlhf_trainer.stages") is None:
        raise TrainerMissing("rlhf run: the trainer's stage programs (rlhf_trainer.stages) are not installed")


def stage_command(stage: StagePlan, config_path: str, nproc: int) -> list[str]:
    """`rlhf-train <stage> --config FILE`, through torchrun when several processes are asked for."""
    trainer = ["-m", "rlhf_trainer", stage.name, "--config", config_path]
    if nproc <= 1:
        return [sys.executable, *trainer]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *trainer]


# Shown in the one-line summary when a stage ends; everything else is in result.json.
SUMMARY_METRICS = (
    "task_accuracy_before",
    "task_accuracy",
    "pair_accuracy",
    "train_loss",
    "eval_loss",
    "reward_mean",
    "kl",
)
# Per-step keys worth a terminal line; the full record goes to the stage log and TensorBoard.
PROGRESS_KEYS = (
    "loss",
    "eval_loss",
    "accuracy",
    "eval_accuracy",
    "rewards/margins",
    "reward_mean",
    "kl",
    "kl_coef",
    "policy_loss",
    "value_loss",
    "response_length",
    "tokens_per_s",
    "learning_rate",
)


def _format_progress(event: dict[str, object]) -> str | None:
    stage = event.pop("stage", "?")
    kind = event.pop("event", None)
    if kind == "done":
        return None  # the executor prints its own summary from result.json
    if kind is not None:
        return f"[{stage}] {kind}" + "".join(f" {k}={v}" for k, v in event.items())
    step, total = event.pop("step", None), event.pop("max_steps", None)
    head = f"[{stage}]" + (f" step {step}/{total}" if total else f" step {step}" if step is not None else "")
    parts = []
    for key in PROGRESS_KEYS:
        value = event.get(key)
        if value is not None:
            parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join([head, *parts]) if parts else None  # e.g. the trainer's end-of-run summary


class LocalRun:
    def __init__(self, run: RLHFRun, workdir: Path, nproc: int | None = None, out: TextIO | None = None):
        self.run = run
        self.workdir = workdir.resolve()
        self.root = Path(run_root(run, str(self.workdir)))
        self.nproc = nproc
        self.out = out or sys.stdout
        self.plans = plan(run, str(self.workdir))
        self.status = RLHFRunStatus(
            phase="Pending",
            stages=[StageStatus(name=p.name, output_path=p.output_dir) for p in self.plans],
            volume_claim=str(self.root),
        )

    def _say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def _write_report(self, reason: str, message: str) -> None:
        self.status.message = message
        self.status.conditions = kstatus_conditions(
            self.status.phase, reason, message, _now(), None, self.status.conditions
        )
        path = self.root / REPORT
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status.to_file_dict(), indent=2) + "\n")
        os.replace(tmp, path)

    def execute(self) -> RLHFRunStatus:
        self.root.mkdir(parents=True, exist_ok=True)
        self.status.phase = "Running"
        self._write_report("Running", "starting")
        for stage_plan, entry in zip(self.plans, self.status.stages, strict=True):
            self.status.current_stage = stage_plan.name
            if stage_plan.skipped:
                entry.phase, entry.merged_path = "Skipped", stage_plan.merged_path
                self._say(f"[{stage_plan.name}] skipped: using {stage_plan.merged_path}")
                continue
            done = read_result(layout.result_path(stage_plan.output_dir))
            if done is not None and done.status == "succeeded":
                self._record(entry, done)
                self._say(f"[{stage_plan.name}] already complete, skipping ({_metrics_line(done)})")
                continue
            self._write_report("StageRunning", f"stage {stage_plan.name} running")
            result = self._run_stage(stage_plan, entry)
            self._record(entry, result)
            if result.status != "succeeded":
                self.status.phase = "Failed"
                message = f"stage {stage_plan.name} failed: {result.message or 'no reason given'}"
                self._write_report("StageFailed", message)
                self._say(f"[{stage_plan.name}] FAILED: {result.message}")
                self._say(f"finished stages are kept; rerun the same command to resume. Report: {self.root / REPORT}")
                return self.status
            self._say(f"[{stage_plan.name}] done in {_duration(entry)}: {_metrics_line(result)}")
            self._write_report("StageSucceeded", f"stage {stage_plan.name} succeeded")
        self.status.phase = "Succeeded"
        self._write_report("Succeeded", "all stages succeeded")
        self._say(f"run {self.run.metadata.name} succeeded. Report: {self.root / REPORT}")
        return self.status

    def _record(self, entry: StageStatus, result: StageResult) -> None:
        entry.phase = "Succeeded" if result.status == "succeeded" else "Failed"
        entry.metrics = dict(result.metrics)
        entry.merged_path = result.merged_path
        entry.message = result.message
        entry.start_time = entry.start_time or result.started_at
        entry.completion_time = result.finished_at

    def _run_stage(self, stage_plan: StagePlan, entry: StageStatus) -> StageResult:
        out_dir = Path(stage_plan.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        config_path = out_dir / layout.CONFIG
        config_path.write_text(yaml.safe_dump(stage_plan.config_file(), sort_keys=False))
        nproc = self.nproc or stage_plan.placement.workers * stage_plan.placement.processes_per_worker
        entry.phase, entry.attempts = "Running", entry.attempts + 1
        entry.start_time = _now()
        self._say(
            f"[{stage_plan.name}] starting ({nproc} process{'es' if nproc > 1 else ''}); log: {out_dir / STAGE_LOG}"
        )
        env = dict(os.environ, RLHF_TERMINATION_LOG=str(out_dir / "termination-log"), PYTHONUNBUFFERED="1")
        tail: deque[str] = deque(maxlen=20)
        with open(out_dir / STAGE_LOG, "a") as log:
            proc = subprocess.Popen(
                stage_command(stage_plan, str(config_path), nproc),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    log.write(line)
                    event = progress.parse(line)
                    shown = _format_progress(event) if event is not None else None
                    if shown:
                        self._say(shown)
                    elif line.strip():
                        tail.append(line.rstrip())
                code = proc.wait()
            except KeyboardInterrupt:
                proc.terminate()
                proc.wait()
                code = -2
        result = read_result(layout.result_path(stage_plan.output_dir))
        if code == 0 and result is not None and result.status == "succeeded":
            return result
        if result is None or result.status == "succeeded":
            # the trainer died before writing a failure record (killed, OOM, import error)
            last = tail[-1] if tail else "no output"
            message = "interrupted" if code == -2 else f"exit code {code}: {last}"
            result = StageResult(
                stage=stage_plan.name, status="failed", output_path=stage_plan.output_dir, message=message
            )
        if tail:
            self._say("\n".join(f"  | {line}" for line in list(tail)[-8:]))
        return result


def _metrics_line(result: StageResult) -> str:
    shown = [k for k in SUMMARY_METRICS if k in result.metrics]
    return ", ".join(f"{k}={result.metrics[k]:.4g}" for k in shown) or "see result.json"


def _duration(entry: StageStatus) -> str:
    try:
        start = dt.datetime.fromisoformat(str(entry.start_time).replace("Z", "+00:00"))
        return f"{(dt.datetime.now(dt.UTC) - start).total_seconds():.0f}s"
    except ValueError:
        return "?"
