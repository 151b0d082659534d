"""Stage configuration: the file `rlhf-train <stage> --config FILE` reads.

Part of the torch-free contract: the RLHFRun spec composes these models, so the operator can
validate and render trainer configs without torch, and the trainer reads the same models.
Field names are camelCase in files (Kubernetes style) and snake_case in Python.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from .camel_model import CamelModel, cel_field_or_default
from .model_config import ModelConfig
from .rest_config import RestLoopConfig
from .reward_sources import MAX_SOURCES, RewardSource, rewards_field, uses_reward_model
from .rlaif_config import RlaifLabelConfig
from .served import JudgeModel

StageName = Literal["sft", "reward", "ppo", "dpo", "grpo", "rloo", "rest", "rlaif"]
STAGES: tuple[StageName, ...] = ("sft", "reward", "ppo", "dpo", "grpo", "rloo", "rest", "rlaif")
# The stages whose output is a policy (a causal LM): what task_accuracy and the comparison measure.
POLICY_STAGES: tuple[StageName, ...] = ("sft", "ppo", "dpo", "grpo", "rloo", "rest")

# How a multi-process stage splits its work: ddp replicates the model on every GPU, fsdp shards
# parameters, gradients and optimizer state over all of the stage's processes (PyTorch FSDP2).
Strategy = Literal["ddp", "fsdp"]
ComputeDtype = Literal["float32", "bfloat16"]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]


class DatasetConfig(CamelModel):
    """Where a stage's data comes from and how its columns map to the trainer's."""

    source: str = Field(
        min_length=1,
        max_length=512,
        description=(
            "Hub dataset name, a file on the run's volume (.json, .jsonl, .csv, .parquet), "
            "or 'builtin:arithmetic', the generated quickstart task with checkable answers; in the stage "
            "right after an rlaif stage, 'rlaif' (or no dataset): the preference pairs it wrote."
        ),
    )
    config_name: str | None = Field(
        default=None, max_length=256, description="Hub dataset configuration (subset) name."
    )
    data_dir: str | None = Field(default=None, max_length=512, description="Hub dataset data_dir (e.g. data/finetune).")
    split: str = Field(default="train", max_length=128, description="Split used for training.")
    eval_split: str | None = Field(
        default=None,
        max_length=128,
        description="Split used for evaluation; when unset, evalFraction of the training split is held out.",
    )
    eval_fraction: float = Field(
        default=0.05, ge=0.0, lt=0.5, description="Share of the training split held out for evaluation."
    )
    format: Literal["auto", "text", "prompt_completion", "chat", "template", "preference", "votes"] = Field(
        default="auto",
        description=(
            "How rows are read. text: one text column; prompt_completion: prompt/completion; "
            "chat: a messages list; template: columns formatted by `template`; preference: "
            "prompt/chosen/rejected; votes: a question with answers and vote counts, turned "
            "into preference pairs; auto: chosen from the stage and the columns present."
        ),
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Column renames from the trainer's names to the dataset's, e.g. {question: title, answer: response_j}."
        ),
    )
    template: str = Field(
        default="Question: {question}\n\nAnswer: {answer}",
        max_length=4096,
        description="Format for the template format (and the prompt part: text before {answer}).",
    )
    max_samples: int | None = Field(
        default=None, ge=1, description="Use at most this many training rows (after shuffling)."
    )
    streaming: bool = Field(default=False, description="Stream a hub dataset instead of downloading it whole.")


class LoraConfig(CamelModel):
    """Low-rank adapters. Disabled means full fine-tuning."""

    enabled: bool = Field(default=True, description="Train LoRA adapters; false trains all weights.")
    r: int = Field(default=16, ge=1, le=1024, description="Adapter rank.")
    alpha: int = Field(default=32, ge=1, le=4096, description="Adapter scaling numerator (lora_alpha).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        min_length=1,
        max_length=64,
        description="Module names to adapt, or ['all-linear'].",
    )


class QuantizationConfig(CamelModel):
    """bitsandbytes quantization of the frozen base weights (QLoRA)."""

    mode: Literal["none", "8bit", "4bit-nf4"] = Field(
        default="none", description="none, 8-bit (LLM.int8) or 4-bit NF4."
    )
    double_quant: bool = Field(default=True, description="4-bit only: quantize the quantization constants.")
    compute_dtype: ComputeDtype = Field(default="bfloat16", description="4-bit only: matmul dtype.")


class TrainerLoopConfig(CamelModel):
    """Hyperparameters of every stage trained by a TRL Trainer (optimizer, schedule, checkpoints)."""

    learning_rate: PositiveFloat = Field(default=2e-4, le=1.0, description="Peak learning rate.")
    epochs: float = Field(default=1.0, gt=0.0, le=1000.0, description="Passes over the training data.")
    max_steps: int = Field(default=-1, ge=-1, description="Stop after this many optimizer steps (-1: use epochs).")
    batch_size: int = Field(default=4, ge=1, le=4096, description="Per-device batch size.")
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024, description="Micro-batches per optimizer step.")
    warmup_ratio: float = Field(default=0.0, ge=0.0, lt=1.0, description="Share of steps spent warming up.")
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        default="linear", description="Learning-rate schedule."
    )
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations to save memory.")
    logging_steps: int = Field(default=10, ge=1, description="Log metrics every N steps.")
    save_steps: int = Field(default=200, ge=1, description="Checkpoint every N steps (resume point).")
    save_total_limit: int = Field(default=2, ge=1, le=100, description="Checkpoints kept on the volume.")
    eval_max_new_tokens: int = Field(
        default=8, ge=1, le=4096, description="Tokens generated per question for task_accuracy."
    )


class TrainingConfig(TrainerLoopConfig):
    """Hyperparameters shared by the stages that train on given sequences (SFT, reward, DPO)."""

    max_length: int = Field(default=512, ge=8, le=131072, description="Maximum tokens per training sequence.")


class SFTTrainingConfig(TrainingConfig):
    packing: bool = Field(default=True, description="Pack sequences into full rows (no padding waste).")
    packing_strategy: Literal["bfd", "wrapped"] = Field(
        default="bfd", description="bfd keeps examples whole; wrapped cuts them at row ends."
    )
    completion_only_loss: bool = Field(
        default=True, description="prompt_completion data: train on the completion tokens only."
    )


class RewardTrainingConfig(TrainingConfig):
    learning_rate: PositiveFloat = Field(default=1e-4, le=1.0, description="Peak learning rate.")
    center_rewards_coefficient: float | None = Field(
        default=None, ge=0.0, description="Penalty pulling rewards towards zero mean (optional)."
    )


class DPOTrainingConfig(TrainingConfig):
    learning_rate: PositiveFloat = Field(default=5e-5, le=1.0, description="Peak learning rate.")
    beta: float = Field(default=0.1, gt=0.0, le=10.0, description="Strength of the implicit KL to the reference.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(default="sigmoid", description="DPO loss variant.")
    max_prompt_length: int | None = Field(default=None, ge=1, description="Truncate prompts to this many tokens.")


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


# ----------------------------------------------------------------------------- GRPO, RLOO
# Group-relative RL on TRL's GRPOTrainer / RLOOTrainer: sample numGenerations responses per
# prompt, score them with the stage's reward sources, and push the policy towards the responses
# that beat their group (GRPO: group mean and std; RLOO: the leave-one-out mean of the others).


def _beta(default: float) -> Any:
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
    beta: float = _beta(0.0)
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


class RLOOTrainingConfig(GroupRLTrainingConfig):
    beta: float = _beta(0.05)
    scale_rewards: Literal["none", "batch"] = Field(
        default="none",
        description="batch: normalize advantages to mean 0, std 1 over each sampled batch; none: raw leave-one-out.",
    )


def _lora(r: int, alpha: int, dropout: float) -> Any:
    return Field(
        default_factory=lambda: LoraConfig(r=r, alpha=alpha, dropout=dropout),
        description="LoRA adapters for this stage.",
    )


class StageCommon(CamelModel):
    dataset: DatasetConfig = Field(description="Training data for this stage.")
    quantization: QuantizationConfig = Field(
        default_factory=QuantizationConfig, description="Quantize the frozen base (QLoRA)."
    )
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="Random seed.")


class SFTStageConfig(StageCommon):
    lora: LoraConfig = _lora(16, 32, 0.05)
    training: SFTTrainingConfig = Field(default_factory=SFTTrainingConfig, description="Hyperparameters.")


class RewardStageConfig(StageCommon):
    lora: LoraConfig = _lora(8, 32, 0.1)
    training: RewardTrainingConfig = Field(default_factory=RewardTrainingConfig, description="Hyperparameters.")
    base_model: ModelConfig | None = Field(
        default=None,
        description=(
            "Start the reward model from this model instead of the SFT output "
            "(e.g. a DeBERTa-style encoder). Its own tokenizer is used."
        ),
    )


class PPOStageConfig(StageCommon):
    lora: LoraConfig = _lora(16, 32, 0.05)
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


class DPOStageConfig(StageCommon):
    lora: LoraConfig = _lora(16, 32, 0.05)
    training: DPOTrainingConfig = Field(default_factory=DPOTrainingConfig, description="Hyperparameters.")


class GroupRLStageConfig(StageCommon):
    lora: LoraConfig = _lora(16, 32, 0.05)
    rewards: list[RewardSource] = rewards_field()


class GRPOStageConfig(GroupRLStageConfig):
    training: GRPOTrainingConfig = Field(default_factory=GRPOTrainingConfig, description="Hyperparameters.")


class RLOOStageConfig(GroupRLStageConfig):
    training: RLOOTrainingConfig = Field(default_factory=RLOOTrainingConfig, description="Hyperparameters.")


# ---- ReST and RLAIF (issue 11): their own knobs live in rest_config / rlaif_config.


class RestStageConfig(RestLoopConfig, StageCommon):
    """ReST: Grow (sample and score) then Improve (filter and fine-tune), repeated."""

    lora: LoraConfig = _lora(16, 32, 0.05)
    training: SFTTrainingConfig = Field(
        default_factory=SFTTrainingConfig,
        description="Fine-tuning of each Improve step (TRL SFTTrainer on the kept samples).",
    )
    rewards: list[RewardSource] = rewards_field()


class RlaifStageConfig(RlaifLabelConfig, StageCommon):
    """RLAIF: sample response pairs from the policy, label them with a judge model."""

    judge: JudgeModel = Field(
        description=(
            "The AI labeller: any causal LM (hub id or path on the volume), typically larger than the "
            "policy; or 'builtin:arithmetic-judge' (quickstart), trained here from the stage's "
            "policy on the exact answers of builtin:arithmetic, so that it knows more than the policy; "
            "or endpoint: an OpenAI-compatible server (choices: labels)."
        ),
    )
    quantization: QuantizationConfig = Field(
        default_factory=QuantizationConfig,
        description="Load the policy and the judge quantized (bitsandbytes), e.g. to fit a large judge.",
    )

    # An endpoint judge answers with a label; it cannot score the responses' own tokens.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.judge) || !has(self.judge.endpoint) || !has(self.choices)"
                    " || self.choices == 'labels'",
                    "message": "judge.endpoint reads a label: choices must be labels",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _endpoint_reads_labels(self) -> RlaifStageConfig:
        if self.judge.endpoint is not None and self.choices != "labels":
            raise ValueError("choices: judge.endpoint reads a label: choices must be labels")
        return self


StageConfig = (
    SFTStageConfig
    | RewardStageConfig
    | PPOStageConfig
    | DPOStageConfig
    | GRPOStageConfig
    | RLOOStageConfig
    | RestStageConfig
    | RlaifStageConfig
)


def ppo_needs_reward_model(section: PPOStageConfig | None) -> bool:
    """PPO scores with the reward stage's model unless its rewards list names none."""
    return section is None or section.rewards is None or uses_reward_model(section.rewards)


def trains_all_weights(section: StageConfig) -> bool:
    """Full fine-tuning: LoRA disabled, or a stage without LoRA settings (rlaif, whose only
    training is the builtin judge's)."""
    lora = getattr(section, "lora", None)
    return lora is None or not lora.enabled


def eval_max_new_tokens(section: StageConfig) -> int:
    """Tokens generated per held-out question for task_accuracy: the stage's training setting
    (rlaif, which trains nothing, has none: the default)."""
    training = getattr(section, "training", None)
    return int(getattr(training, "eval_max_new_tokens", TrainingConfig.model_fields["eval_max_new_tokens"].default))


ReportTo = Literal["tensorboard", "wandb"]


class EvaluationConfig(CamelModel):
    """The run's last step: its starting model and its trained model side by side."""

    enabled: bool = Field(
        default=True,
        description=(
            "After the final stage (when it trains a policy), generate answers to held-out prompts "
            "with the model it started from and the model it produced, score both with the run's "
            "reward model when there is one, and write the win rate and samples to <run>/eval/."
        ),
    )
    prompts: int = Field(default=128, ge=1, le=10000, description="Held-out prompts to compare on (at most).")
    max_new_tokens: int | None = Field(
        default=None,
        ge=1,
        le=8192,
        description="Tokens generated per prompt (greedy). Unset: the final stage's training.evalMaxNewTokens.",
    )


class CompareConfig(CamelModel):
    """What the final stage's program compares after training (set by the planner)."""

    prompts: int = Field(default=128, ge=1, le=10000, description="Held-out prompts to compare on (at most).")
    max_new_tokens: int = Field(default=8, ge=1, le=8192, description="Tokens generated per prompt (greedy).")
    reward_model: ModelConfig | None = Field(
        default=None, description="Scores both models' answers; without it there is no win rate."
    )


def _default_report_to() -> list[ReportTo]:
    return ["tensorboard"]


# dataset: the stage after rlaif trains on that stage's pairs (issue 11).
InputRole = Literal["model", "rewardModel", "dataset"]


class StageInput(CamelModel):
    """An earlier stage of the same run whose output this stage loads: checked before training."""

    stage: StageName = Field(description="The stage that produced the input.")
    output_dir: str = Field(min_length=1, description="That stage's output directory (holds its result.json).")
    role: InputRole = Field(
        description="What of this config the input provides: model, rewardModel, or dataset (rlaif's pairs)."
    )


class TrainerJobConfig(CamelModel):
    """The resolved file one stage process reads: what to train, from what, into where."""

    stage: StageName = Field(description="Which stage program runs.")
    run_name: str = Field(min_length=1, max_length=253, description="The RLHFRun's name.")
    model: ModelConfig = Field(description="Weights the stage starts from (base or a previous stage's merged output).")
    reward_model: ModelConfig | None = Field(
        default=None,
        description="The reward stage's merged model: for PPO, and for reward sources of type rewardModel.",
    )
    output_dir: str = Field(min_length=1, description="Where checkpoints, merged model, logs and result.json go.")
    work_dir: str = Field(
        min_length=1, description="Run root: shared cache for builtin models and data between stages."
    )
    report_to: list[ReportTo] = Field(
        default_factory=_default_report_to, description="Metric sinks (wandb needs WANDB_API_KEY)."
    )
    strategy: Strategy = Field(
        default="ddp", description="ddp: a model copy per process; fsdp: sharded over all processes (FSDP2)."
    )
    fsdp_offload: bool = Field(
        default=False, description="fsdp only: keep the shards of parameters, gradients and optimizer state on the CPU."
    )
    inputs: list[StageInput] = Field(
        default_factory=list,
        description=(
            "Earlier stages of this run whose outputs the stage loads: each must have succeeded and "
            "trained its planned steps (their result.json says so) before this stage trains."
        ),
    )
    compare: CompareConfig | None = Field(
        default=None,
        description="Final stage only: compare the starting and the trained model after training (<workDir>/eval/).",
    )
    sft: SFTStageConfig | None = None
    reward: RewardStageConfig | None = None
    ppo: PPOStageConfig | None = None
    dpo: DPOStageConfig | None = None
    grpo: GRPOStageConfig | None = None
    rloo: RLOOStageConfig | None = None
    rest: RestStageConfig | None = None
    rlaif: RlaifStageConfig | None = None
    eval_task: DatasetConfig | None = Field(
        default=None,
        description=(
            "The data with ground truth for task_accuracy, when the stage trains on data without it "
            "(the pairs an rlaif stage wrote from these prompts). Default: the stage's dataset."
        ),
    )

    @model_validator(mode="after")
    def _one_section(self) -> TrainerJobConfig:
        present = [s for s in STAGES if getattr(self, s) is not None]
        if present != [self.stage]:
            raise ValueError(f"exactly the '{self.stage}' section must be set, found {present}")
        if self.stage == "ppo" and self.reward_model is None and ppo_needs_reward_model(self.ppo):
            raise ValueError("rewardModel is required for the ppo stage")
        if self.reward_model is None and uses_reward_model(getattr(self.section, "rewards", None)):
            raise ValueError(f"rewardModel: required, a {self.stage}.rewards source has type rewardModel")
        if self.fsdp_offload and self.strategy != "fsdp":
            raise ValueError("fsdpOffload needs strategy fsdp")
        return self

    @property
    def section(self) -> StageConfig:
        section = getattr(self, self.stage)
        assert section is not None  # guaranteed by _one_section
        return section  # type: ignore[no-any-return]

    def compare_settings(self) -> CompareConfig:
        """The compare section as planned; for a config written without one (an older run),
        the stage's own defaults."""
        return self.compare or CompareConfig(
            max_new_tokens=eval_max_new_tokens(self.section), reward_model=self.reward_model
        )
