"""The `reward` stage kind (a reward model): TRL RewardTrainer on a one-output sequence classifier, pairwise loss.

The base is the SFT output (cfg.model) unless reward.baseModel names another model (e.g. an
encoder such as DeBERTa or MiniLM), which brings its own tokenizer.
"""

from __future__ import annotations

from typing import Any

from rlhf_api.result import StageResult
from rlhf_api.stages.reward import RewardStageConfig
from rlhf_api.trainer_job import TrainerJobConfig
from transformers import set_seed
from trl import RewardConfig, RewardTrainer

from ..data import StageData, load_stage_data
from ..evaluate import pair_accuracy
from ..modeling import apply_lora, load_sequence_classifier
from ..placement import Loading
from .lifecycle import StageOutputs, run_stage, trained_base
from .trl_glue import ProgressCallback, train_evaluate_merge, trainer_arguments


def build_trainer(cfg: TrainerJobConfig) -> tuple[RewardTrainer, StageData]:
    """The configured trainer and the (untokenized) data it was given."""
    section = cfg.section_as(RewardStageConfig)
    training = section.training
    set_seed(section.seed)
    base = trained_base(cfg)
    data = load_stage_data(section.dataset, "reward", cfg.work_dir, section.seed)
    model, tokenizer = load_sequence_classifier(
        base.model, base.quantization, cfg.work_dir, base.field, loading=Loading.for_job(cfg)
    )
    if tokenizer.eos_token is None:
        # Encoders (BERT, MiniLM) have no eos; the trainer appends one to every text, so use
        # the separator, which such models already expect at the end (the handover checked
        # that one of eos, sep, pad exists).
        tokenizer.eos_token = tokenizer.sep_token or tokenizer.pad_token
    model = apply_lora(model, section.lora, "SEQ_CLS")
    args = RewardConfig(
        **trainer_arguments(cfg, training, section.seed),
        max_length=training.max_length,
        center_rewards_coefficient=training.center_rewards_coefficient,
        eval_strategy="no",
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        # Held-out pairs are scored once, exactly, by pair_accuracy after training.
        eval_dataset=None,
        processing_class=tokenizer,
        callbacks=[ProgressCallback("reward")],
    )
    return trainer, data


def _body(cfg: TrainerJobConfig) -> StageOutputs:
    trainer, data = build_trainer(cfg)

    def evaluate(model: Any, tokenizer: Any) -> dict[str, float]:
        if data.eval is None:
            return {}
        # Exact held-out pair accuracy over all eval pairs (the trainer's eval_accuracy
        # is a mean of per-batch means).
        accuracy = pair_accuracy(model, tokenizer, data.eval)
        return {} if accuracy is None else {"pair_accuracy": accuracy}

    return train_evaluate_merge(trainer, cfg, evaluate)


def run(cfg: TrainerJobConfig) -> StageResult:
    return run_stage(cfg, _body)
