"""A stage's lifecycle: the run wrapper (dirs, handover check, result.json, errors, preemption),
which process is the main one, and the model the stage trains."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf_api import progress
from rlhf_api.layout import LOGS, result_path
from rlhf_api.result import (
    EXIT_FAILED,
    EXIT_PREEMPTED,
    EXIT_SUCCEEDED,
    StageResult,
    write_result,
    write_termination_log,
)
from rlhf_api.trainer_job import TrainerJobConfig

from .. import checkpoint_guard, preemption
from ..checkpoint_lease import Lease, LeaseHeld
from ..errors import StageError
from ..handover import check_inputs, models_used
from ..placement import peak_gpu_memory, select_gpu
from ..preemption import Preempted
from .checkpoints import checkpoints_dir

if TYPE_CHECKING:
    from ..modeling import BaseWeights

__all__ = [
    "StageError",
    "StageOutputs",
    "is_main_process",
    "rank",
    "run_stage",
    "trained_base",
]


@dataclass
class StageOutputs:
    """What a stage body hands back; run_stage turns it into the StageResult."""

    merged_path: str | None = None
    adapter_path: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    steps: int | None = None  # optimizer (or PPO) steps done in total
    planned_steps: int | None = None  # steps the stage was set to train
    resumed_from_step: int | None = None  # the checkpoint this attempt resumed from


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 of a torchrun/accelerate launch (or the only process)."""
    return rank() == 0


# How long an attempt waits for an earlier one still holding the output dir (its pods in their
# termination grace period) before it fails: one lease lifetime and a little.
LEASE_WAIT_SECONDS = float(os.environ.get("RLHF_LEASE_WAIT_SECONDS", "130"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def run_stage(cfg: TrainerJobConfig, body: Callable[[TrainerJobConfig], StageOutputs]) -> StageResult:
    """Check the inputs (handover), run a stage body, record the outcome in result.json (rank 0).

    StageError -> status failed with "field: message"; SIGTERM (Preempted) -> failed and
    preempted, with the step of the checkpoint saved; any other exception -> failed with the
    exception's one-line summary (traceback on stderr). Never raises; the result carries the
    process's exit code.
    """
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / LOGS).mkdir(exist_ok=True)
    # The HF TensorBoard callback reads its directory from the environment.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(out / LOGS)
    started = _now()
    lease: Lease | None = None  # rank 0 writes into the output dir only while it holds this
    try:
        with preemption.interruptible():
            select_gpu()  # cuda:LOCAL_RANK before anything touches CUDA (no-op on CPU)
            lease = _begin_attempt(cfg)
            check_inputs(cfg)
            outputs = body(cfg)
        outputs.metrics.update(peak_gpu_memory())  # on CUDA: the trainer's own peak, for sizing
        result = StageResult(
            stage=cfg.stage,
            status="succeeded",
            output_path=cfg.output_dir,
            merged_path=outputs.merged_path,
            adapter_path=outputs.adapter_path,
            metrics={k: float(v) for k, v in outputs.metrics.items()},
            started_at=started,
            finished_at=_now(),
            steps=outputs.steps,
            planned_steps=outputs.planned_steps,
            resumed_from_step=outputs.resumed_from_step,
            exit_code=EXIT_SUCCEEDED,
            identity=cfg.identity,
        )
        if cfg.compare is not None and is_main_process():
            _compare_into(cfg, result)
    except Preempted as stop:
        # Rank 0 keeps the count (of attempts in a row without a new checkpoint).
        stalled = (
            checkpoint_guard.no_progress_failure(cfg.output_dir, stop.step, stop.resumed_from)
            if lease is not None
            else None
        )
        result = _failed(cfg, started, stalled or stop.message, EXIT_FAILED if stalled else EXIT_PREEMPTED).model_copy(
            update={
                "preempted": stalled is None,
                "steps": stop.step,
                "planned_steps": stop.planned_steps,
                "resumed_from_step": stop.resumed_from,
            }
        )
    except LeaseHeld as exc:  # another attempt writes the output dir: touch nothing there
        result = _failed(cfg, started, str(exc), exc.exit_code)
    except StageError as exc:
        result = _failed(cfg, started, str(exc), exc.exit_code)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        summary = f"{type(exc).__name__}: {exc}".splitlines()[0][:1000]
        result = _failed(cfg, started, summary, EXIT_FAILED)
    if is_main_process() and lease is None:  # stopped before it held the output dir
        write_termination_log(result)
    elif is_main_process():
        write_result(result, result_path(cfg.output_dir))
        if result.status == "succeeded":
            checkpoint_guard.progress_made(cfg.output_dir)
            progress.emit(cfg.stage, event="done", metrics=result.metrics)
    if lease is not None:
        lease.release()
    # The attempt's identity ends with it: a later stage in this process (a test, `compare`)
    # would otherwise stamp its checkpoints, and judge them, with this run's identity.
    checkpoint_guard.set_identity(None)
    return result


def _begin_attempt(cfg: TrainerJobConfig) -> Lease | None:
    """This attempt's identity for the checkpoint code; on rank 0, the output dir's lease and
    the checkpoints it may not resume moved aside (checkpoint_guard)."""
    checkpoint_guard.set_identity(cfg.identity)
    if not is_main_process():
        return None
    lease = Lease(Path(cfg.output_dir), cfg.identity).acquire(wait=LEASE_WAIT_SECONDS)
    checkpoint_guard.set_aside(checkpoints_dir(cfg.output_dir), cfg.output_dir, cfg.identity)
    return lease


def _compare_into(cfg: TrainerJobConfig, result: StageResult) -> None:
    """The final stage's last step: the side-by-side comparison, its summary into the metrics.

    The trained model is kept whatever happens here: a failed comparison is reported in the
    result's message, not as a failed stage (a retry would train again for nothing)."""
    from ..model_comparison import compare_stage_output  # torch-heavy, and only the final stage needs it

    try:
        summary = compare_stage_output(cfg, result.merged_path)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        result.message = f"comparison failed: {type(exc).__name__}: {exc}".splitlines()[0][:1000]
        return
    result.metrics.update(summary.metrics())


def _failed(cfg: TrainerJobConfig, started: str, message: str, code: int) -> StageResult:
    return StageResult(
        stage=cfg.stage,
        status="failed",
        output_path=cfg.output_dir,
        message=message,
        started_at=started,
        finished_at=_now(),
        exit_code=code,
        identity=cfg.identity,
    )


def trained_base(cfg: TrainerJobConfig) -> BaseWeights:
    """The model the stage trains, as it loads it: what the merge reloads."""
    from ..modeling import BaseWeights

    field, model = models_used(cfg)[0]
    return BaseWeights(model=model, quantization=cfg.section.quantization, work_dir=cfg.work_dir, field=field)
