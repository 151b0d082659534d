"""SFT stage: TRL SFTTrainer with LoRA (optionally on a quantized base), packing, merge."""

from __future__ import annotations

from rlhf_api.result import StageResult
from rlhf_api.stages.sft import SFTStageConfig
from rlhf_api.trainer_job import TrainerJobConfig
from trl import SFTConfig, SFTTrainer

from ..modeling import apply_lora
from .lifecycle import StageOutputs, run_stage
from .trl_glue import ProgressCallback, load_policy, task_accuracy_metrics, train_evaluate_merge, trainer_arguments


def build_trainer(cfg: TrainerJobConfig) -> SFTTrainer:
    """The configured SFTTrainer (model loaded and adapted, data formatted), not yet trained."""
    section = cfg.section_as(SFTStageConfig)
    training = section.training
    data, model, tokenizer = load_policy(cfg)
    model = apply_lora(model, section.lora, "CAUSAL_LM")
    args = SFTConfig(
        **trainer_arguments(cfg, training, section.seed),
        max_length=training.max_length,
        packing=training.packing,
        packing_strategy=training.packing_strategy,
        # Only meaningful for prompt/completion rows; None lets TRL decide for the others.
        completion_only_loss=(
            training.completion_only_loss if "completion" in (data.train.column_names or []) else None
        ),
        eval_strategy="no",
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        callbacks=[ProgressCallback("sft")],
    )


def _body(cfg: TrainerJobConfig) -> StageOutputs:
    return train_evaluate_merge(build_trainer(cfg), cfg, task_accuracy_metrics(cfg))


def run(cfg: TrainerJobConfig) -> StageResult:
    return run_stage(cfg, _body)
