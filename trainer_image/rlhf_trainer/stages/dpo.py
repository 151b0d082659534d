"""DPO stage: TRL DPOTrainer with LoRA; the reference is the same model with its adapter disabled."""

from __future__ import annotations

from rlhf_api.result import StageResult
from rlhf_api.stages.dpo import DPOStageConfig
from rlhf_api.trainer_job import TrainerJobConfig
from trl import DPOConfig, DPOTrainer

from ..modeling import apply_lora
from .lifecycle import StageOutputs, run_stage
from .trl_glue import (
    ProgressCallback,
    load_policy,
    task_accuracy_metrics,
    train_evaluate_merge,
    trainer_arguments,
    truncate_prompts,
)


def build_trainer(cfg: TrainerJobConfig) -> DPOTrainer:
    section = cfg.section_as(DPOStageConfig)
    training = section.training
    data, model, tokenizer = load_policy(cfg)
    if training.max_prompt_length is not None:
        # TRL 1.16 dropped max_prompt_length; truncate here so the option keeps its meaning.
        data.train = truncate_prompts(data.train, tokenizer, training.max_prompt_length)
        if data.eval is not None:
            data.eval = truncate_prompts(data.eval, tokenizer, training.max_prompt_length)
    model = apply_lora(model, section.lora, "CAUSAL_LM")
    args = DPOConfig(
        **trainer_arguments(cfg, training, section.seed),
        max_length=training.max_length,
        beta=training.beta,
        loss_type=[training.loss_type],
        eval_strategy="no",
    )
    return DPOTrainer(
        model=model,
        ref_model=None,  # with LoRA: the adapter-disabled model is the reference
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        callbacks=[ProgressCallback("dpo")],
    )


def _body(cfg: TrainerJobConfig) -> StageOutputs:
    return train_evaluate_merge(build_trainer(cfg), cfg, task_accuracy_metrics(cfg))


def run(cfg: TrainerJobConfig) -> StageResult:
    return run_stage(cfg, _body)
