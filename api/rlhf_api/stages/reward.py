"""The reward kind: a reward model (sequence classifier) trained on preference pairs."""

from __future__ import annotations

from pydantic import Field

from ..model_config import ModelConfig
from ..stage_config import LoraConfig, PositiveFloat, StageCommon, TrainingConfig, lora_field
from .kind import MemoryProfile, StageKind


class RewardTrainingConfig(TrainingConfig):
    learning_rate: PositiveFloat = Field(default=1e-4, le=1.0, description="Peak learning rate.")
    center_rewards_coefficient: float | None = Field(
        default=None, ge=0.0, description="Penalty pulling rewards towards zero mean (optional)."
    )


class RewardStageConfig(StageCommon):
    lora: LoraConfig = lora_field(8, 32, 0.1)
    training: RewardTrainingConfig = Field(default_factory=RewardTrainingConfig, description="Hyperparameters.")
    base_model: ModelConfig | None = Field(
        default=None,
        description=(
            "Start the reward model from this model instead of the SFT output "
            "(e.g. a DeBERTa-style encoder). Its own tokenizer is used."
        ),
    )

    def lora_settings(self) -> LoraConfig | None:
        return self.lora

    def eval_max_new_tokens(self) -> int:
        return self.training.eval_max_new_tokens

    def own_base_model(self) -> ModelConfig | None:
        return self.base_model

    def extra_models(self) -> dict[str, ModelConfig]:
        return {"base_model": self.base_model} if self.base_model is not None else {}


KIND = StageKind(
    name="reward",
    config=RewardStageConfig,
    section_doc="Reward model trained on preference pairs (chosen vs rejected).",
    spec_description="Reward model stage.",
    entry_point="rlhf_trainer.stages.reward_model:run",
    data="preference",
    pipelines=(("reward",), ("sft", "reward"), ("rlaif", "reward"), ("sft", "rlaif", "reward")),
    is_policy=False,
    produces_reward_model=True,
    can_follow_rlaif=True,
    memory=MemoryProfile(sequences_per_example=2, classifier=True),
    progress=("accuracy",),  # TRL's RewardTrainer: pair accuracy of the batch
    progress_detail=("eval_accuracy",),
)
