"""The grpo kind: GRPO (TRL GRPOTrainer) against the stage's reward sources."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .group_rl import GroupRLStageConfig, GroupRLTrainingConfig, groups_fit_cel_rule
from .kind import MemoryProfile, StageKind, scored_pipelines


class GRPOTrainingConfig(GroupRLTrainingConfig):
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field(
        default="dapo",
        description=(
            "How token losses are averaged (TRL): grpo per sequence (length bias), dapo over the "
            "tokens of the accumulated batch, dr_grpo by a constant (maxCompletionLength), bnpo over "
            "the tokens of the local batch."
        ),
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        default="group",
        description="Divide advantages by the reward std of the group, of the batch, or not at all (Dr. GRPO).",
    )


class GRPOStageConfig(GroupRLStageConfig):
    training: GRPOTrainingConfig = Field(default_factory=GRPOTrainingConfig, description="Hyperparameters.")

    def eval_max_new_tokens(self) -> int:
        return self.training.eval_max_new_tokens


KIND = StageKind(
    name="grpo",
    config=GRPOStageConfig,
    section_doc="GRPO (TRL GRPOTrainer): group-relative policy optimization against the reward sources.",
    spec_description="GRPO stage.",
    entry_point="rlhf_trainer.stages.grpo:run",
    data="prompts",
    pipelines=scored_pipelines("grpo"),
    is_policy=True,
    reward_model="sources",
    memory=MemoryProfile(shape="group"),
    schema_rules={"GRPOTrainingConfig": [groups_fit_cel_rule(GRPOTrainingConfig)]},
    # the mean total reward of the last quarter of the steps; remote reward sources' call counts
    metrics=("reward", "remote_requests", "remote_retries"),
    progress=("reward", "kl"),  # TRL's GRPOTrainer
)
