"""The dpo kind: direct preference optimization of the SFT policy (TRL DPOTrainer)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..stage_config import LoraConfig, PositiveFloat, StageCommon, TrainingConfig, lora_field
from .kind import MemoryProfile, StageKind


class DPOTrainingConfig(TrainingConfig):
    learning_rate: PositiveFloat = Field(default=5e-5, le=1.0, description="Peak learning rate.")
    beta: float = Field(default=0.1, gt=0.0, le=10.0, description="Strength of the implicit KL to the reference.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(default="sigmoid", description="DPO loss variant.")
    max_prompt_length: int | None = Field(default=None, ge=1, description="Truncate prompts to this many tokens.")


class DPOStageConfig(StageCommon):
    lora: LoraConfig = lora_field(16, 32, 0.05)
    training: DPOTrainingConfig = Field(default_factory=DPOTrainingConfig, description="Hyperparameters.")

    def lora_settings(self) -> LoraConfig | None:
        return self.lora

    def eval_max_new_tokens(self) -> int:
        return self.training.eval_max_new_tokens


KIND = StageKind(
    name="dpo",
    config=DPOStageConfig,
    section_doc="Direct preference optimization of the SFT policy.",
    spec_description="DPO stage.",
    entry_point="rlhf_trainer.stages.dpo:run",
    data="preference",
    pipelines=(("dpo",), ("sft", "dpo"), ("rlaif", "dpo"), ("sft", "rlaif", "dpo")),
    is_policy=True,
    can_follow_rlaif=True,
    pipeline_hint="dpo cannot follow reward or be combined with ppo",
    memory=MemoryProfile(sequences_per_example=2),
    progress=("rewards/accuracies", "rewards/margins"),  # TRL's DPOTrainer
)
