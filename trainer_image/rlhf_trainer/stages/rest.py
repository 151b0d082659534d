"""ReST stage (Gulcehre et al. 2023): Grow then Improve, repeated, from the SFT model.

Grow g: sample `samplesPerPrompt` responses per prompt from the current policy, score them with
the stage's reward sources (the reward stage's model by default), write them to
`grow-<g>/samples.jsonl`. Improve i: keep the samples scoring at least the i-th threshold, fine-tune
the current policy on them with TRL's SFTTrainer (LoRA by default), merge, and continue from the
result (`steps/grow-<g>-improve-<i>/merged`). Each finished Improve step is recorded in
rest_state.json with its metrics; a restarted stage continues after the last one, reusing the
Grow step's samples. The final policy is `<out>/merged`.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from rlhf_api import progress
from rlhf_api.layout import ADAPTER, LOGS, MERGED
from rlhf_api.model_config import ModelConfig
from rlhf_api.result import StageResult
from rlhf_api.stages.rest import RestStageConfig
from rlhf_api.trainer_job import TrainerJobConfig
from transformers import set_seed

from .. import model_cache, placement, preemption
from ..data import PromptRows, prompt_rows
from ..errors import StageError
from ..evaluate import task_accuracy
from ..jsonl import read_jsonl, write_jsonl
from ..modeling import BaseWeights, apply_lora, save_merged
from ..reward_sources import RewardFunctions, build_reward_functions, served_metrics
from ..sampling import sample_responses
from ..self_training.schedule import Step, grow_prompts, kept, steps, threshold
from ..self_training.store import STATE, Iteration, RestState, samples_path
from .checkpoints import latest_checkpoint
from .lifecycle import StageOutputs, run_stage
from .trl_glue import ProgressCallback, train_resumably, trainer_arguments

STEPS_DIR = "steps"


def _logged_loss(trainer: Any) -> float:
    """An Improve step resumed at its last step trains nothing: its loss is the mean of the
    losses the previous attempt logged (in the checkpoint's trainer state)."""
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return float(statistics.fmean(losses)) if losses else float("nan")


def run(cfg: TrainerJobConfig) -> StageResult:
    return run_stage(cfg, train)


class _Run:
    """One ReST stage's settings and helpers (config, prompts, reward functions, metrics sink)."""

    def __init__(self, cfg: TrainerJobConfig, section: RestStageConfig, rows: PromptRows, rewards: RewardFunctions):
        self.cfg, self.section, self.rows, self.rewards = cfg, section, rows, rewards
        self.out = Path(cfg.output_dir)
        self.task = cfg.eval_task or section.dataset
        # Improve steps done and planned: the stage's steps in result.json (and when preempted)
        self.done, self.planned = 0, section.grow_steps * section.improve_steps
        self.writer: Any = None
        if "tensorboard" in cfg.report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.out / LOGS / "rest"))

    def model_config(self, path: str) -> ModelConfig:
        """A policy this stage wrote, loaded like the stage's starting model."""
        return self.cfg.model.weights_at(path)

    def load(self, policy: ModelConfig, keep: bool) -> tuple[Any, Any]:
        """The policy's weights, through the stage's model cache: evaluation and the Grow step
        keep them for the Improve step that fine-tunes them (keep=False: it takes them)."""
        return model_cache.causal_lm(policy, self.section.quantization, self.cfg.work_dir, keep=keep)

    def accuracy(self, model: Any, tokenizer: Any) -> float | None:
        max_new_tokens = self.section.training.eval_max_new_tokens
        return task_accuracy(model, tokenizer, self.task, self.cfg.work_dir, max_new_tokens)

    def grow(self, policy: ModelConfig, grow: int) -> list[dict[str, Any]]:
        """The Grow step's scored samples: from the volume when a previous attempt wrote them."""
        path = samples_path(self.cfg.output_dir, grow)
        if path.exists():
            progress.emit("rest", event="reuse", grow=grow, samples=str(path))
            return read_jsonl(path)
        section = self.section
        index = grow_prompts(len(self.rows.prompts), grow, section.prompts_per_grow)
        model, tokenizer = self.load(policy, keep=True)
        torch.manual_seed(section.seed * 1000 + grow)
        prompts = [self.rows.prompts[i] for i in index]
        responses = sample_responses(model, tokenizer, prompts, section.samples_per_prompt, section.sampling)
        del model
        n = section.samples_per_prompt
        flat_prompts = [p for p in prompts for _ in range(n)]
        flat_responses = [r for group in responses for r in group]
        columns = {name: [values[i] for i in index for _ in range(n)] for name, values in self.rows.columns.items()}
        totals, per_source = self.rewards.score(flat_prompts, flat_responses, columns)
        samples = [
            {
                "prompt": prompt,
                "response": response,
                "reward": total,
                "rewards": {label: scores[k] for label, scores in per_source.items()},
            }
            for k, (prompt, response, total) in enumerate(zip(flat_prompts, flat_responses, totals, strict=True))
        ]
        write_jsonl(path, samples)
        return samples

    def improve(
        self, policy: ModelConfig, samples: list[dict[str, Any]], step: Step
    ) -> tuple[str, float, float | None]:
        """Fine-tune the policy on the kept samples; returns (merged path, train loss, task accuracy)."""
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        section, training = self.section, self.section.training
        step_dir = self.out / STEPS_DIR / step.name
        checkpoints = step_dir / "checkpoints"
        model, tokenizer = self.load(policy, keep=False)
        model = apply_lora(model, section.lora, "CAUSAL_LM")
        arguments = trainer_arguments(self.cfg, training, section.seed) | {"output_dir": str(checkpoints)}
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(
                **arguments,
                max_length=training.max_length,
                packing=training.packing,
                packing_strategy=training.packing_strategy,
                completion_only_loss=training.completion_only_loss,
                eval_strategy="no",
            ),
            train_dataset=Dataset.from_list([{"prompt": s["prompt"], "completion": s["response"]} for s in samples]),
            processing_class=tokenizer,
            callbacks=[ProgressCallback("rest")],
        )
        # SIGTERM: the step in progress is checkpointed, the next attempt resumes it.
        result, preempted = train_resumably(trainer, "rest", latest_checkpoint(str(checkpoints)))
        if preempted:
            raise preemption.Preempted(self.done, self.planned)
        loss = float(result.training_loss) if result is not None else _logged_loss(trainer)
        accuracy = self.accuracy(trainer.model, tokenizer)
        base = BaseWeights(model=policy, quantization=section.quantization, work_dir=self.cfg.work_dir, field="model")
        merged, _ = save_merged(trainer.model, tokenizer, str(step_dir), base)
        shutil.rmtree(checkpoints, ignore_errors=True)  # the merged model is this step's resume point
        return merged, loss, accuracy

    def log(self, index: int, total: int, record: Iteration) -> None:
        numbers = {
            k: v
            for k, v in (
                ("grow", record.grow),
                ("improve", record.improve),
                ("threshold", record.threshold),
                ("samples_kept", record.samples_kept),
                ("reward_mean", record.reward_mean),
                ("kept_reward_mean", record.kept_reward_mean),
                ("task_accuracy", record.task_accuracy),
            )
            if v is not None
        }
        progress.emit("rest", event="iteration", step=index, max_steps=total, **numbers)
        if self.writer is not None:
            for key, value in numbers.items():
                self.writer.add_scalar(f"rest/{key}", value, index)
            self.writer.flush()


def train(cfg: TrainerJobConfig) -> StageOutputs:
    section = cfg.section_as(RestStageConfig)
    if placement.hardware().distributed:
        raise StageError("placement", "rest runs in one process: set workers 1 and gpusPerWorker at most 1")
    started = time.perf_counter()
    set_seed(section.seed)
    rows = prompt_rows(section.dataset, cfg.work_dir, section.seed)
    if not rows.prompts:
        raise StageError("rest.dataset", "the dataset yielded no prompts")
    rewards = build_reward_functions(
        section.rewards,
        reward_model=cfg.reward_model,
        work_dir=cfg.work_dir,
        columns=list(rows.columns),
        device=torch.device(placement.this_device()),
        field="rest.rewards",
    )
    run = _Run(cfg, section, rows, rewards)
    state = RestState.load(cfg.output_dir)
    if not state.iterations and state.task_accuracy_before is None:
        model, tokenizer = run.load(cfg.model, keep=True)  # the first Grow step samples from it
        state.task_accuracy_before = run.accuracy(model, tokenizer)
        state.save(cfg.output_dir)
        del model
    schedule = steps(section.grow_steps, section.improve_steps)
    if state.iterations:
        where = str(Path(cfg.output_dir) / STATE)
        progress.emit("rest", event="resume", checkpoint=where, after=len(state.iterations), of=len(schedule))
    policy = run.model_config(state.iterations[-1].policy) if state.iterations else cfg.model
    resumed_from = len(state.iterations) or None
    for index, step in enumerate(schedule[len(state.iterations) :], start=len(state.iterations) + 1):
        run.done = index - 1
        samples = run.grow(policy, step.grow)
        scores = [float(s["reward"]) for s in samples]
        limit = threshold(scores, section.threshold.mode, section.threshold.values[step.improve - 1])
        chosen = [samples[i] for i in kept(scores, limit)]
        merged, loss, accuracy = policy.name, None, None
        if chosen:
            merged, loss, accuracy = run.improve(policy, chosen, step)
        record = Iteration(
            grow=step.grow,
            improve=step.improve,
            threshold=limit,
            samples=len(samples),
            samples_kept=len(chosen),
            reward_mean=statistics.fmean(scores) if scores else 0.0,
            kept_reward_mean=statistics.fmean(float(s["reward"]) for s in chosen) if chosen else None,
            policy=merged,
            task_accuracy=accuracy,
            train_loss=loss,
        )
        state.iterations.append(record)
        state.save(cfg.output_dir)
        run.log(index, len(schedule), record)
        _drop_older_policy(run.out, policy.name, merged)
        policy = run.model_config(merged)
    model_cache.release()  # a policy no Improve step fine-tuned (it kept no sample)
    if run.writer is not None:
        run.writer.close()
    merged_path, adapter_path = _finalize(run.out, policy.name)
    return StageOutputs(
        merged_path=merged_path,
        adapter_path=adapter_path,
        # remote sources' requests and retries beside the stage's own figures
        metrics=_metrics(state, time.perf_counter() - started) | served_metrics(rewards.functions),
        steps=len(state.iterations),
        planned_steps=len(schedule),
        resumed_from_step=resumed_from,
    )


def _drop_older_policy(out: Path, previous: str, current: str) -> None:
    """Delete the previous step's model once the next one is recorded (one policy on the volume)."""
    step_dir = Path(previous).parent
    if previous != current and step_dir.parent == out / STEPS_DIR:
        shutil.rmtree(step_dir, ignore_errors=True)


def _finalize(out: Path, policy: str) -> tuple[str, str | None]:
    """Move the last step's model to `<out>/merged` (and its adapter to `<out>/adapter`)."""
    merged = out / MERGED
    step_dir = Path(policy).parent
    if step_dir.parent == out / STEPS_DIR:
        for name in (MERGED, ADAPTER):
            if (step_dir / name).exists():
                shutil.rmtree(out / name, ignore_errors=True)
                (step_dir / name).rename(out / name)
    elif not merged.exists():  # no Improve step kept anything: the starting policy is the result
        raise StageError("rest.threshold", "no Improve step kept any sample: lower the thresholds")
    adapter = out / ADAPTER
    return str(merged), str(adapter) if adapter.exists() else None


def _metrics(state: RestState, seconds: float) -> dict[str, float]:
    last = state.iterations[-1]
    metrics: dict[str, float] = {
        "iterations": float(len(state.iterations)),
        "samples_kept": float(last.samples_kept),
        "threshold": last.threshold,
        "reward_mean": last.reward_mean,
        "reward_mean_first_grow": state.iterations[0].reward_mean,
        "train_seconds": seconds,
    }
    if last.kept_reward_mean is not None:
        metrics["kept_reward_mean"] = last.kept_reward_mean
    if last.train_loss is not None:
        metrics["train_loss"] = last.train_loss
    accuracies = [i.task_accuracy for i in state.iterations if i.task_accuracy is not None]
    if accuracies:
        metrics["task_accuracy"] = accuracies[-1]
    if state.task_accuracy_before is not None:
        metrics["task_accuracy_before"] = state.task_accuracy_before
    return metrics
