"""RLOO stage: TRL RLOOTrainer (REINFORCE, leave-one-out baseline) against the stage's reward
sources (see group_rl)."""

from __future__ import annotations

from typing import Any

from rlhf_api.result import StageResult
from rlhf_api.stages.rloo import RLOOStageConfig
from rlhf_api.trainer_job import TrainerJobConfig
from trl import RLOOConfig, RLOOTrainer

from . import group_rl
from .lifecycle import StageOutputs, run_stage


def build_trainer(cfg: TrainerJobConfig) -> Any:
    section = cfg.section_as(RLOOStageConfig)
    algorithm = {"normalize_advantages": section.training.scale_rewards == "batch"}
    return group_rl.build_trainer(cfg, RLOOTrainer, RLOOConfig, algorithm)


def _body(cfg: TrainerJobConfig) -> StageOutputs:
    return group_rl.train(build_trainer(cfg), cfg)


def run(cfg: TrainerJobConfig) -> StageResult:
    return run_stage(cfg, _body)
