"""KTO stage: TRL KTOTrainer with LoRA; the reference is the same model with its adapter disabled.

The stage's data are preference pairs (prompt/chosen/rejected). KTO wants unpaired examples in
a mixed order: TRL unpairs a batch of pairs into all its chosen rows followed by all its rejected
ones and then samples sequentially (its KL estimate pairs each example with its batch
neighbours' completions), so a run of a few hundred steps would see desirable examples only.
The pairs are unpaired here and shuffled with the stage's seed before TRL sees them.
"""

from __future__ import annotations

from typing import Any

from rlhf_api.result import StageResult
from rlhf_api.stages.kto import KTOStageConfig
from rlhf_api.trainer_job import TrainerJobConfig
from trl import KTOConfig, KTOTrainer
from trl.data_utils import unpair_preference_dataset

from ..modeling import apply_lora
from .lifecycle import StageOutputs, run_stage
from .trl_glue import ProgressCallback, load_policy, task_accuracy_metrics, train_evaluate_merge, trainer_arguments


def unpaired(pairs: Any, seed: int) -> Any:
    """prompt/completion/label rows (label True: desirable), one of each per pair, shuffled."""
    return unpair_preference_dataset(pairs).shuffle(seed=seed).flatten_indices()


def build_trainer(cfg: TrainerJobConfig) -> KTOTrainer:
    section = cfg.section_as(KTOStageConfig)
    training = section.training
    data, model, tokenizer = load_policy(cfg)
    model = apply_lora(model, section.lora, "CAUSAL_LM")
    args = KTOConfig(
        **trainer_arguments(cfg, training, section.seed),
        max_length=training.max_length,
        beta=training.beta,
        loss_type=training.loss_type,
        desirable_weight=training.desirable_weight,
        undesirable_weight=training.undesirable_weight,
        eval_strategy="no",
    )
    return KTOTrainer(
        model=model,
        ref_model=None,  # with LoRA: the adapter-disabled model is the reference
        args=args,
        train_dataset=unpaired(data.train, section.seed),
        eval_dataset=None if data.eval is None else unpaired(data.eval, section.seed),
        processing_class=tokenizer,
        callbacks=[ProgressCallback("kto")],
    )


def _body(cfg: TrainerJobConfig) -> StageOutputs:
    return train_evaluate_merge(build_trainer(cfg), cfg, task_accuracy_metrics(cfg))


def run(cfg: TrainerJobConfig) -> StageResult:
    return run_stage(cfg, _body)
