"""What every stage's configuration is made of: data, LoRA, quantization, the training loop.

Part of the torch-free contract: each stage kind (rlhf_api.stages.<kind>) composes these into its
own config; the RLHFRun spec and the trainer's file (rlhf_api.trainer_job) compose the kinds.
Field names are camelCase in files (Kubernetes style) and snake_case in Python.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from .camel_model import CamelModel
from .model_config import ModelConfig
from .reward_sources import RewardSource

if TYPE_CHECKING:
    from .served import JudgeEndpoint

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


def lora_field(r: int, alpha: int, dropout: float) -> Any:
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

    # What the rest of the system asks of any stage's section; each kind's config answers for
    # itself (no getattr over the union of configs).
    def lora_settings(self) -> LoraConfig | None:
        """The stage's adapters; None for a stage without LoRA settings (rlaif)."""
        return None

    def trains_all_weights(self) -> bool:
        """Full fine-tuning: LoRA disabled, or a stage without LoRA settings (rlaif, whose only
        training is the builtin judge's)."""
        lora = self.lora_settings()
        return lora is None or not lora.enabled

    def eval_max_new_tokens(self) -> int:
        """Tokens generated per held-out question for task_accuracy: the stage's training setting
        (a stage that trains nothing has none: the default)."""
        return int(TrainingConfig.model_fields["eval_max_new_tokens"].default)

    def reward_sources(self) -> list[RewardSource]:
        """What scores the stage's samples (stages that accept reward sources)."""
        return []

    def own_base_model(self) -> ModelConfig | None:
        """A model the stage starts from instead of the previous stage's output."""
        return None

    def extra_models(self) -> dict[str, ModelConfig]:
        """The section's own model fields by name (resolved against the volume by the plan)."""
        return {}

    def judge_endpoint(self) -> JudgeEndpoint | None:
        """An OpenAI-compatible server the stage asks as its judge (rlaif)."""
        return None


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
