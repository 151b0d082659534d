"""GRPO stage: TRL GRPOTrainer against the stage's reward sources (see group_rl)."""

from __future__ import annotations

from typing import Any

from rlhf_api.result import StageResult
from rlhf_api.stages.grpo import GRPOStageConfig
from rlhf_api.trainer_job import TrainerJobConfig
from trl import GRPOConfig, GRPOTrainer

from . import group_rl
from .lifecycle import StageOutputs, run_stage


def build_trainer(cfg: TrainerJobConfig) -> Any:
    section = cfg.section_as(GRPOStageConfig)
    training = section.training
    algorithm = {"loss_type": training.loss_type, "scale_rewards": training.scale_rewards}
    return group_rl.build_trainer(cfg, GRPOTrainer, GRPOConfig, algorithm)


def _body(cfg: TrainerJobConfig) -> StageOutputs:
    return group_rl.train(build_trainer(cfg), cfg)


def run(cfg: TrainerJobConfig) -> StageResult:
    return run_stage(cfg, _body)
