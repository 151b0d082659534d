"""The ppo kind: the project's PPO engine against the reward model, KL-penalized towards the SFT policy."""

from __future__ import annotations

from pydantic import Field, model_validator

from ..camel_model import CamelModel, cel_field_or_default
from ..reward_sources import MAX_SOURCES, RewardSource
from ..stage_config import LoraConfig, PositiveFloat, StageCommon, lora_field
from .kind import MemoryProfile, StageKind, scored_pipelines


class KLControlConfig(CamelModel):
    """Per-token KL penalty coefficient: fixed, or adapted towards a target KL."""

    adaptive: bool = Field(default=True, description="Adapt the coefficient (Ziegler et al. 2019) or keep it fixed.")
    init_coef: float = Field(default=0.1, ge=0.0, le=100.0, description="Initial (or fixed) KL coefficient.")
    target: float = Field(default=6.0, gt=0.0, description="Adaptive: target KL per sequence, in nats.")
    horizon: int = Field(default=10000, ge=1, description="Adaptive: horizon in samples.")


class PPOTrainingConfig(CamelModel):
    """The project's PPO engine (TRL removed its PPOTrainer)."""

    steps: int = Field(default=100, ge=1, le=10_000_000, description="PPO iterations (rollout + update).")
    batch_size: int = Field(default=64, ge=1, le=65536, description="Prompts per rollout.")
    mini_batch_size: int = Field(default=16, ge=1, le=65536, description="Samples per gradient step.")
    ppo_epochs: int = Field(default=4, ge=1, le=100, description="Passes over each rollout.")
    micro_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description=(
            "Samples per forward/backward pass inside a mini-batch; gradients are accumulated over "
            "the mini-batch's micro-batches before each optimizer step (same update, less activation "
            "memory). Unset: the whole mini-batch at once."
        ),
    )
    rollout_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description=(
            "Samples generated and scored by the reward model at a time (the KV cache and the reward "
            "pass scale with it; the reference pass runs per micro-batch). Unset: the whole batch at once."
        ),
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute the policy's activations in the backward pass (less memory, ~30% more compute).",
    )
    learning_rate: PositiveFloat = Field(default=1.4e-5, le=1.0, description="Adam learning rate.")
    gamma: float = Field(default=1.0, ge=0.0, le=1.0, description="Discount factor.")
    lam: float = Field(default=0.95, ge=0.0, le=1.0, description="GAE lambda.")
    clip_range: float = Field(default=0.2, gt=0.0, le=10.0, description="Policy ratio clip.")
    clip_range_value: float = Field(default=0.2, gt=0.0, le=100.0, description="Value prediction clip.")
    vf_coef: float = Field(default=0.1, ge=0.0, le=100.0, description="Value loss weight.")
    max_grad_norm: float = Field(default=1.0, gt=0.0, description="Gradient clipping norm.")
    whiten_advantages: bool = Field(default=True, description="Normalize advantages per batch.")
    kl: KLControlConfig = Field(default_factory=KLControlConfig, description="KL penalty control.")
    reward_baseline: float = Field(default=0.0, description="Subtracted from every reward score.")
    normalize_reward: bool = Field(default=False, description="Scale rewards by a running std.")
    min_new_tokens: int = Field(default=4, ge=1, le=8192, description="Length sampler: fewest response tokens.")
    max_new_tokens: int = Field(default=32, ge=1, le=8192, description="Length sampler: most response tokens.")
    temperature: float = Field(default=1.0, gt=0.0, le=10.0, description="Sampling temperature.")
    top_k: int = Field(default=0, ge=0, description="Sampling top-k (0: off).")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Sampling nucleus probability.")
    max_prompt_length: int = Field(
        default=256, ge=1, le=131072, description="Prompts are truncated to this many tokens."
    )
    save_steps: int = Field(default=20, ge=1, description="Checkpoint every N PPO steps (resume point).")
    logging_steps: int = Field(default=1, ge=1, description="Log every N PPO steps.")
    eval_max_new_tokens: int = Field(
        default=8, ge=1, le=4096, description="Tokens generated per question for task_accuracy."
    )

    @model_validator(mode="after")
    def _sizes(self) -> PPOTrainingConfig:
        if self.mini_batch_size > self.batch_size:
            raise ValueError("miniBatchSize must not exceed batchSize")
        if self.micro_batch_size is not None and self.micro_batch_size > self.mini_batch_size:
            raise ValueError("microBatchSize must not exceed miniBatchSize")
        if self.rollout_batch_size is not None and self.rollout_batch_size > self.batch_size:
            raise ValueError("rolloutBatchSize must not exceed batchSize")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError("minNewTokens must not exceed maxNewTokens")
        return self


class PPOStageConfig(StageCommon):
    lora: LoraConfig = lora_field(16, 32, 0.05)
    training: PPOTrainingConfig = Field(default_factory=PPOTrainingConfig, description="Hyperparameters.")
    rewards: list[RewardSource] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SOURCES,
        description=(
            "Reward sources summed with their weights, as grpo.rewards (e.g. a remote reward server; a "
            "source's null counts 0). Default: the reward stage's model (on the policy's base when the "
            "reward stage trained a LoRA adapter)."
        ),
    )

    def lora_settings(self) -> LoraConfig | None:
        return self.lora

    def reward_sources(self) -> list[RewardSource]:
        return list(self.rewards or [])

    def eval_max_new_tokens(self) -> int:
        return self.training.eval_max_new_tokens


# The CEL twins of PPOTrainingConfig._sizes (the API server sees no defaults: an unset field is
# the model's default).
PPO_SIZE_CEL_RULES = [
    {
        "rule": "!has(self.miniBatchSize) || !has(self.batchSize) || self.miniBatchSize <= self.batchSize",
        "message": "miniBatchSize must not exceed batchSize",
    },
    {
        "rule": "!has(self.microBatchSize) || self.microBatchSize <= "
        + cel_field_or_default(PPOTrainingConfig, "mini_batch_size"),
        "message": "microBatchSize must not exceed miniBatchSize",
    },
    {
        "rule": "!has(self.rolloutBatchSize) || self.rolloutBatchSize <= "
        + cel_field_or_default(PPOTrainingConfig, "batch_size"),
        "message": "rolloutBatchSize must not exceed batchSize",
    },
    {
        "rule": "!has(self.minNewTokens) || !has(self.maxNewTokens) || self.minNewTokens <= self.maxNewTokens",
        "message": "minNewTokens must not exceed maxNewTokens",
    },
]

KIND = StageKind(
    name="ppo",
    config=PPOStageConfig,
    section_doc="PPO against the reward model, KL-penalized towards the SFT policy.",
    spec_description="PPO stage.",
    entry_point="rlhf_trainer.stages.ppo:run",
    data="prompts",
    pipelines=scored_pipelines("ppo"),
    is_policy=True,
    reward_model="unless_sources",
    requires=(("reward", "a reward model"), ("sft", "an SFT model")),
    trainer="engine",
    memory=MemoryProfile(shape="engine", value_head=True),
    schema_rules={"PPOTrainingConfig": PPO_SIZE_CEL_RULES},
    metrics=("task_accuracy_before", "remote_requests", "remote_retries"),
    progress=("reward_mean", "kl"),  # the engine's step numbers (rlhf_trainer.ppo.loop)
    progress_detail=("kl_coef", "policy_loss", "value_loss", "response_length", "tokens_per_s"),
)
