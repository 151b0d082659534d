"""The rest kind: ReST (Reinforced Self-Training), Grow then Improve, repeated (rlhf_api.rest_config)."""

from __future__ import annotations

from pydantic import Field

from ..rest_config import RestLoopConfig
from ..reward_sources import RewardSource, rewards_field
from ..stage_config import LoraConfig, StageCommon, lora_field
from .kind import StageKind, scored_pipelines
from .sft import SFTTrainingConfig


class RestStageConfig(RestLoopConfig, StageCommon):
    """ReST: Grow (sample and score) then Improve (filter and fine-tune), repeated."""

    lora: LoraConfig = lora_field(16, 32, 0.05)
    training: SFTTrainingConfig = Field(
        default_factory=SFTTrainingConfig,
        description="Fine-tuning of each Improve step (TRL SFTTrainer on the kept samples).",
    )
    rewards: list[RewardSource] = rewards_field()

    def lora_settings(self) -> LoraConfig | None:
        return self.lora

    def eval_max_new_tokens(self) -> int:
        return self.training.eval_max_new_tokens

    def reward_sources(self) -> list[RewardSource]:
        return self.rewards


KIND = StageKind(
    name="rest",
    config=RestStageConfig,
    section_doc="ReST: Grow (sample and score with the reward model), Improve (filter and fine-tune), repeated.",
    spec_description="ReST stage (Reinforced Self-Training).",
    entry_point="rlhf_trainer.stages.rest:run",
    data="prompts",
    pipelines=scored_pipelines("rest"),
    is_policy=True,
    reward_model="sources",
    metrics=("samples_kept", "kept_reward_mean", "task_accuracy_before", "remote_requests", "remote_retries"),
    pipeline_hint="rest comes last, after sft and/or reward",
)
