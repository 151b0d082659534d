"""What the TRL/HF-Trainer-based stages share (SFT, reward, DPO, GRPO, RLOO, ReST's Improve
steps): TrainingArguments, the preemption/progress callbacks, resumable training, the
train-evaluate-merge body, and loading/evaluating the policy they train."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from rlhf_api import progress
from rlhf_api.stage_config import TrainerLoopConfig
from rlhf_api.trainer_job import TrainerJobConfig
from transformers import TrainerCallback

from .. import checkpoint_guard, preemption
from ..handover import models_used
from ..preemption import Preempted
from .checkpoints import checkpoints_dir, resume_point, step_of
from .lifecycle import StageOutputs, is_main_process, trained_base

__all__ = [
    "PreemptionCallback",
    "ProgressCallback",
    "fit",
    "load_policy",
    "task_accuracy_metrics",
    "train_evaluate_merge",
    "train_resumably",
    "trainer_arguments",
    "truncate_prompts",
]


def trainer_arguments(cfg: TrainerJobConfig, training: TrainerLoopConfig, seed: int) -> dict[str, Any]:
    """TrainingArguments kwargs shared by the TRL-based stages (SFT, reward, DPO, GRPO, RLOO).

    Device, precision and sharding come from `placement` (on CPU: use_cpu, no mixed precision,
    gloo). Activation checkpointing only when asked (TRL turns it on by default).
    """
    from .. import placement

    hw = placement.hardware()
    field, model = models_used(cfg)[0]  # the trained model (the reward stage may start elsewhere)
    prec = placement.precision(model.dtype, hw, "trl", cfg.section.trains_all_weights(), f"{field}.dtype")
    return {
        "output_dir": checkpoints_dir(cfg.output_dir),
        "seed": seed,
        "data_seed": seed,
        "learning_rate": training.learning_rate,
        "num_train_epochs": training.epochs,
        "max_steps": training.max_steps,
        "per_device_train_batch_size": training.batch_size,
        "per_device_eval_batch_size": training.batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "warmup_steps": training.warmup_ratio,  # transformers 5: a float < 1 is a ratio
        "weight_decay": training.weight_decay,
        "lr_scheduler_type": training.lr_scheduler,
        "logging_steps": training.logging_steps,
        "save_strategy": "steps",
        "save_steps": training.save_steps,
        "save_total_limit": training.save_total_limit,
        "report_to": [r for r in cfg.report_to if r != "wandb" or os.environ.get("WANDB_API_KEY")],
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "remove_unused_columns": True,
        "include_num_input_tokens_seen": "non_padding",  # train_tokens_per_second in the metrics
        **placement.trainer_kwargs(hw, prec, cfg.strategy, cfg.fsdp_offload, training.gradient_checkpointing),
        **placement.accelerate_fsdp_on_cpu(hw, cfg.strategy),  # a no-op except fsdp on CPU processes
    }


class PreemptionCallback(TrainerCallback):
    """Once any rank received SIGTERM: save a checkpoint at the end of the step in progress and
    stop. The Trainer's checkpoint holds the model, optimizer, scheduler, every rank's RNG
    states and the step (the data position: on resume the Trainer skips the batches already
    seen), so the next attempt continues exactly where this one stopped."""

    def __init__(self) -> None:
        self.stopped_at: int | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        # Every rank runs this at every optimizer step, so the all-reduce inside lines up.
        if preemption.stop_agreed():
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control


class _Finished(Exception):
    """The checkpoint resumed from already reached the planned steps (raised before the loop)."""


class _StopIfFinished(TrainerCallback):
    """Resumed at or past max_steps in the middle of an epoch, transformers 5.23 trains one step
    more than planned (measured: a rerun from checkpoint-4 of 4 trained and saved step 5, so a
    retried stage would not equal an uninterrupted one). By on_train_begin the checkpoint's
    model, optimizer and state are loaded: stop there instead."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if 0 < state.max_steps <= state.global_step:
            raise _Finished()


class ProgressCallback(TrainerCallback):
    """Turns the Trainer's log events into progress lines (main process only)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        numbers = {
            k: v
            for k, v in logs.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k not in _RESERVED
        }
        progress.emit(self.stage, step=state.global_step, max_steps=state.max_steps, **numbers)


_RESERVED = ("step", "max_steps", "stage")


def train_resumably(trainer: Any, stage: str, resume: str | None) -> tuple[Any | None, bool]:
    """trainer.train() from checkpoint `resume` (or the start), stopping at a SIGTERM with the
    step in progress saved. Returns (the train output, None when the checkpoint was already at
    the last step; whether a SIGTERM stopped training, every rank's checkpoint part on disk)."""
    if resume and is_main_process():
        progress.emit(stage, event="resume", checkpoint=resume)
    stop = PreemptionCallback()
    trainer.add_callback(stop)
    trainer.add_callback(checkpoint_guard.stamp_on_save())
    trainer.add_callback(_StopIfFinished())
    result = None
    try:
        with preemption.training():
            result = trainer.train(resume_from_checkpoint=resume)
    except _Finished:
        pass  # resumed from the last step's checkpoint: the model is loaded, nothing left to train
    # A signal during the last step's save ends training normally: that checkpoint is the stop.
    if stop.stopped_at is not None or preemption.stop_agreed():
        finish(trainer)  # every rank's part of the checkpoint (its RNG state) is on disk
        return result, True
    return result, False


def fit(trainer: Any, cfg: TrainerJobConfig, evaluate: bool = True) -> dict[str, float]:
    """trainer.train(), resuming from the latest checkpoint of this output dir when present;
    then a final evaluation when the trainer has eval data. Returns numeric metrics."""
    resume = resume_point(cfg)
    result, preempted = train_resumably(trainer, cfg.stage, resume)
    if preempted:
        state = trainer.state
        raise Preempted(state.global_step, state.max_steps, step_of(resume) if resume else None)
    metrics: dict[str, float] = {"global_step": float(trainer.state.global_step)}
    if resume:
        metrics["resumed_from_step"] = float(step_of(resume))
    if result is not None:
        metrics["train_loss"] = float(result.training_loss)
        for key in ("train_runtime", "train_samples_per_second"):
            if key in result.metrics:
                metrics[key] = float(result.metrics[key])
        tokens, runtime = trainer.state.num_input_tokens_seen, result.metrics.get("train_runtime")
        if tokens and runtime:  # all processes' tokens (include_num_input_tokens_seen); this session's
            metrics["train_tokens_per_second"] = float(tokens - trainer._initial_num_input_tokens_seen) / runtime
    if evaluate and trainer.eval_dataset is not None:
        for key, value in trainer.evaluate().items():
            if isinstance(value, int | float):
                metrics[key] = float(value)
    return metrics


def train_evaluate_merge(
    trainer: Any, cfg: TrainerJobConfig, evaluate: Callable[[Any, Any], dict[str, float]]
) -> StageOutputs:
    """The Trainer-based stages' body: fit (resuming), then on rank 0 the stage's own held-out
    metrics (`evaluate(model, tokenizer)`) and the merged model; other ranks wait for it.

    Under fsdp every rank runs the evaluation on its shards (the forward passes are collective;
    rank 0 keeps the numbers), then helps gather the weights for rank 0's unsharded copy."""
    from .. import sharding  # torch-heavy: imported only where a stage runs
    from ..modeling import save_merged
    from ..placement import Loading

    metrics = fit(trainer, cfg)
    outputs = StageOutputs(
        metrics=metrics,
        steps=trainer.state.global_step,
        planned_steps=trainer.state.max_steps,
        resumed_from_step=int(metrics["resumed_from_step"]) if "resumed_from_step" in metrics else None,
    )
    model, tokenizer, base = trainer.model, trainer.processing_class, trained_base(cfg)
    sharded = sharding.is_sharded(model)
    if sharded or is_main_process():
        held_out = evaluate(model, tokenizer)
        outputs.metrics.update(held_out if is_main_process() else {})
    if sharded:
        model = sharding.unsharded_copy(model, is_main_process(), base, Loading.for_job(cfg))
    if is_main_process():
        outputs.merged_path, outputs.adapter_path = save_merged(model, tokenizer, cfg.output_dir, base)
    finish(trainer)
    return outputs


def load_policy(cfg: TrainerJobConfig) -> tuple[Any, Any, Any]:
    """(data, model, tokenizer) for the causal-LM stages (SFT, DPO), seeded; LoRA not yet applied.

    Data first: a bad column fails in a second, before any model is loaded."""
    from transformers import set_seed

    from ..data import load_stage_data
    from ..modeling import load_causal_lm
    from ..placement import Loading

    section = cfg.section
    set_seed(section.seed)
    data = load_stage_data(section.dataset, cfg.stage, cfg.work_dir, section.seed)
    model, tokenizer = load_causal_lm(cfg.model, section.quantization, cfg.work_dir, loading=Loading.for_job(cfg))
    return data, model, tokenizer


def task_accuracy_metrics(cfg: TrainerJobConfig) -> Callable[[Any, Any], dict[str, float]]:
    """`evaluate` for the policy stages: held-out task_accuracy, when the dataset has ground truth."""
    from ..evaluate import task_accuracy

    section = cfg.section
    # eval_task: the stage trains on data without ground truth (e.g. rlaif's pairs)
    task = cfg.eval_task or section.dataset

    def evaluate(model: Any, tokenizer: Any) -> dict[str, float]:
        max_new_tokens = section.eval_max_new_tokens()
        accuracy = task_accuracy(model, tokenizer, task, cfg.work_dir, max_new_tokens)
        return {} if accuracy is None else {"task_accuracy": accuracy}

    return evaluate


def truncate_prompts(dataset: Any, tokenizer: Any, max_tokens: int) -> Any:
    """Keep the last max_tokens tokens of each prompt (the part next to the answer)."""

    def cut(row: dict[str, Any]) -> dict[str, Any]:
        ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return {}
        return {"prompt": tokenizer.decode(ids[-max_tokens:])}

    return dataset.map(cut)


def finish(trainer: Any) -> None:
    """Hold every rank until rank 0 has saved and evaluated (a barrier on a launch, else nothing)."""
    trainer.accelerator.wait_for_everyone()
