"""The kto kind: Kahneman-Tversky optimization of the SFT policy (TRL KTOTrainer).

KTO learns from unpaired examples, each a desirable or an undesirable completion of a prompt.
Given preference pairs (the `preference` data of DPO and the reward model), every pair becomes
one desirable (chosen) and one undesirable (rejected) example.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..stage_config import LoraConfig, PositiveFloat, StageCommon, TrainingConfig, lora_field
from .kind import MemoryProfile, StageKind


class KTOTrainingConfig(TrainingConfig):
    learning_rate: PositiveFloat = Field(default=5e-5, le=1.0, description="Peak learning rate.")
    # The KL term is estimated from the batch's other completions: one example alone has none.
    batch_size: int = Field(default=8, ge=2, le=4096, description="Per-device batch size (at least 2).")
    beta: float = Field(default=0.1, gt=0.0, le=10.0, description="Strength of the KL to the reference.")
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field(
        default="kto", description="kto (with the batch's KL estimate) or apo_zero_unpaired (no KL term)."
    )
    desirable_weight: float = Field(
        default=1.0, gt=0.0, le=100.0, description="Weight of the desirable examples' losses."
    )
    undesirable_weight: float = Field(
        default=1.0, gt=0.0, le=100.0, description="Weight of the undesirable examples' losses."
    )


class KTOStageConfig(StageCommon):
    lora: LoraConfig = lora_field(16, 32, 0.05)
    training: KTOTrainingConfig = Field(default_factory=KTOTrainingConfig, description="Hyperparameters.")

    def lora_settings(self) -> LoraConfig | None:
        return self.lora

    def eval_max_new_tokens(self) -> int:
        return self.training.eval_max_new_tokens


KIND = StageKind(
    name="kto",
    config=KTOStageConfig,
    section_doc="Kahneman-Tversky optimization of the SFT policy on desirable and undesirable examples.",
    spec_description="KTO stage.",
    entry_point="rlhf_trainer.stages.kto:run",
    data="preference",
    pipelines=(("kto",), ("sft", "kto")),
    is_policy=True,
    pipeline_hint="kto follows sft or stands alone",
    progress=("rewards/margins", "kl"),  # TRL's KTOTrainer
    # Each example is scored twice by the policy and the reference: its completion and the
    # mismatched completion of the KL estimate.
    memory=MemoryProfile(sequences_per_example=2),
)
