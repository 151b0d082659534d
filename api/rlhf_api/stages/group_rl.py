"""What the grpo and rloo kinds share (not a kind itself).

Group-relative RL on TRL's GRPOTrainer / RLOOTrainer: sample numGenerations responses per
prompt, score them with the stage's reward sources, and push the policy towards the responses
that beat their group (GRPO: group mean and std; RLOO: the leave-one-out mean of the others).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from ..camel_model import cel_field_or_default
from ..reward_sources import RewardSource, rewards_field
from ..stage_config import LoraConfig, PositiveFloat, StageCommon, TrainerLoopConfig, lora_field


def beta_field(default: float) -> Any:
    return Field(
        default=default,
        ge=0.0,
        le=10.0,
        description="KL coefficient towards the starting policy; 0 skips the reference pass (faster, less memory).",
    )


class GroupRLTrainingConfig(TrainerLoopConfig):
    """What GRPO and RLOO share: sampling, group size, KL to the starting policy, clipping."""

    learning_rate: PositiveFloat = Field(default=1e-5, le=1.0, description="Peak learning rate.")
    batch_size: int = Field(
        default=8,
        ge=1,
        le=4096,
        description=(
            "Completions per device per micro-step (prompts x numGenerations); batchSize x "
            "gradientAccumulationSteps must be a multiple of numGenerations."
        ),
    )
    num_generations: int = Field(
        default=8, ge=2, le=256, description="Responses sampled per prompt: the group each one is compared with."
    )
    max_prompt_length: int = Field(
        default=512,
        ge=1,
        le=131072,
        description="Prompts are cut to their last this-many tokens (TRL's GRPO and RLOO take them whole).",
    )
    max_completion_length: int = Field(default=256, ge=1, le=131072, description="Most tokens sampled per response.")
    temperature: float = Field(default=1.0, gt=0.0, le=10.0, description="Sampling temperature.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Sampling nucleus probability.")
    top_k: int = Field(default=0, ge=0, description="Sampling top-k (0: off).")
    num_iterations: int = Field(
        default=1, ge=1, le=100, description="Optimizer passes over each sampled batch (TRL's mu)."
    )
    epsilon: float = Field(default=0.2, gt=0.0, le=10.0, description="Clip range of the policy ratio.")
    beta: float = beta_field(0.0)
    logging_steps: int = Field(default=1, ge=1, description="Log metrics every N steps.")

    @model_validator(mode="after")
    def _groups_fit(self) -> GroupRLTrainingConfig:
        if (self.batch_size * self.gradient_accumulation_steps) % self.num_generations:
            raise ValueError(GROUPS_FIT_MESSAGE)
        return self


GROUPS_FIT_MESSAGE = "batchSize x gradientAccumulationSteps must be a multiple of numGenerations"


def groups_fit_cel_rule(model: type[GroupRLTrainingConfig]) -> dict[str, str]:
    """GroupRLTrainingConfig._groups_fit for the API server (which sees no defaults: unset fields
    take the model's defaults here)."""

    def value(name: str) -> str:
        return cel_field_or_default(model, name)

    product = f"{value('batch_size')} * {value('gradient_accumulation_steps')}"
    return {"rule": f"({product}) % {value('num_generations')} == 0", "message": GROUPS_FIT_MESSAGE}


class GroupRLStageConfig(StageCommon):
    lora: LoraConfig = lora_field(16, 32, 0.05)
    rewards: list[RewardSource] = rewards_field()

    def lora_settings(self) -> LoraConfig | None:
        return self.lora

    def reward_sources(self) -> list[RewardSource]:
        return self.rewards
