"""The rloo kind: RLOO (TRL RLOOTrainer), REINFORCE with a leave-one-out baseline."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .group_rl import GroupRLStageConfig, GroupRLTrainingConfig, beta_field, groups_fit_cel_rule
from .kind import MemoryProfile, StageKind, scored_pipelines


class RLOOTrainingConfig(GroupRLTrainingConfig):
    beta: float = beta_field(0.05)
    scale_rewards: Literal["none", "batch"] = Field(
        default="none",
        description="batch: normalize advantages to mean 0, std 1 over each sampled batch; none: raw leave-one-out.",
    )


class RLOOStageConfig(GroupRLStageConfig):
    training: RLOOTrainingConfig = Field(default_factory=RLOOTrainingConfig, description="Hyperparameters.")

    def eval_max_new_tokens(self) -> int:
        return self.training.eval_max_new_tokens


KIND = StageKind(
    name="rloo",
    config=RLOOStageConfig,
    section_doc="RLOO (TRL RLOOTrainer): REINFORCE with a leave-one-out baseline against the reward sources.",
    spec_description="RLOO stage.",
    entry_point="rlhf_trainer.stages.rloo:run",
    data="prompts",
    pipelines=scored_pipelines("rloo"),
    is_policy=True,
    reward_model="sources",
    memory=MemoryProfile(shape="group"),
    schema_rules={"RLOOTrainingConfig": [groups_fit_cel_rule(RLOOTrainingConfig)]},
    # the mean total reward of the last quarter of the steps; remote reward sources' call counts
    metrics=("reward", "remote_requests", "remote_retries"),
    progress=("reward", "kl"),  # TRL's RLOOTrainer
)
