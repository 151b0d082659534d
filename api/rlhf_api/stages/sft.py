"""The sft kind: supervised fine-tuning of the base model on demonstrations (TRL SFTTrainer)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..stage_config import LoraConfig, StageCommon, TrainingConfig, lora_field
from .kind import StageKind


class SFTTrainingConfig(TrainingConfig):
    packing: bool = Field(default=True, description="Pack sequences into full rows (no padding waste).")
    packing_strategy: Literal["bfd", "wrapped"] = Field(
        default="bfd", description="bfd keeps examples whole; wrapped cuts them at row ends."
    )
    completion_only_loss: bool = Field(
        default=True, description="prompt_completion data: train on the completion tokens only."
    )


class SFTStageConfig(StageCommon):
    lora: LoraConfig = lora_field(16, 32, 0.05)
    training: SFTTrainingConfig = Field(default_factory=SFTTrainingConfig, description="Hyperparameters.")

    def lora_settings(self) -> LoraConfig | None:
        return self.lora

    def eval_max_new_tokens(self) -> int:
        return self.training.eval_max_new_tokens


KIND = StageKind(
    name="sft",
    config=SFTStageConfig,
    section_doc="Supervised fine-tuning of the base model on demonstrations.",
    spec_description="Supervised fine-tuning stage.",
    entry_point="rlhf_trainer.stages.sft:run",
    data="demonstrations",
    pipelines=(("sft",),),
    is_policy=True,
    starts_from_sft=False,
)
