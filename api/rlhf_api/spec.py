"""The RLHFRun custom resource: the one schema source. crds/ is generated from these models.

Stage sections reuse the trainer's config models (rlhf_api.stage_config), so what a user writes
under `spec.sft` is exactly what the SFT program reads; placement and retries are added here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from .camel_model import CamelModel, field_errors
from .quantity import LABEL_VALUE, NON_NEGATIVE_QUANTITY, POSITIVE_QUANTITY, check_quantity
from .reward_sources import RewardSource
from .rlaif_config import RLAIF_SOURCE
from .stage_config import (
    STAGES,
    DatasetConfig,
    DPOStageConfig,
    EvaluationConfig,
    GRPOStageConfig,
    ModelConfig,
    PPOStageConfig,
    RestStageConfig,
    RewardStageConfig,
    RlaifStageConfig,
    RLOOStageConfig,
    SFTStageConfig,
    StageName,
    Strategy,
)

GROUP = "rlhf.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "RLHFRun"
PLURAL = "rlhfruns"
SINGULAR = "rlhfrun"
SHORT_NAMES = ["rlhf"]

# GPU feature discovery's product label: `accelerator: nvidia-a100-80gb` selects these nodes.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
ACCELERATOR_PRODUCTS: dict[str, str] = {
    "nvidia-a100-40gb": "NVIDIA-A100-SXM4-40GB",
    "nvidia-a100-80gb": "NVIDIA-A100-SXM4-80GB",
    "nvidia-h100-80gb": "NVIDIA-H100-80GB-HBM3",
    "nvidia-h200": "NVIDIA-H200",
    "nvidia-l4": "NVIDIA-L4",
    "nvidia-a10g": "NVIDIA-A10G",
    "nvidia-t4": "Tesla-T4",
}
Accelerator = Literal[
    "nvidia-a100-40gb",
    "nvidia-a100-80gb",
    "nvidia-h100-80gb",
    "nvidia-h200",
    "nvidia-l4",
    "nvidia-a10g",
    "nvidia-t4",
]

# Every pipeline the operator accepts: an ordered subsequence of sft->reward->ppo or sft->dpo.
ALLOWED_PIPELINES: list[list[str]] = [
    ["sft", "reward", "ppo"],
    ["sft", "reward"],
    ["sft", "ppo"],
    ["reward", "ppo"],
    ["sft"],
    ["reward"],
    ["ppo"],
    ["sft", "dpo"],
    ["dpo"],
    # group-relative RL: from the SFT model, or from the base model when there is no SFT
    ["sft", "reward", "grpo"],
    ["sft", "grpo"],
    ["reward", "grpo"],
    ["grpo"],
    ["sft", "reward", "rloo"],
    ["sft", "rloo"],
    ["reward", "rloo"],
    ["rloo"],
    # ReST (issue 11): last; scored by the reward stage's model or other reward sources.
    ["sft", "reward", "rest"],
    ["sft", "rest"],
    ["reward", "rest"],
    ["rest"],
    # RLAIF (issue 11): its pairs are the data of the reward or dpo stage right after it.
    ["sft", "rlaif", "reward", "ppo"],
    ["sft", "rlaif", "reward", "rest"],
    ["sft", "rlaif", "reward"],
    ["sft", "rlaif", "dpo"],
    ["rlaif", "reward"],
    ["rlaif", "dpo"],
    ["sft", "rlaif", "reward", "grpo"],
    ["sft", "rlaif", "reward", "rloo"],
]
# Stages whose `rewards` list may name the reward stage's model (type rewardModel).
REWARD_SOURCE_STAGES: tuple[StageName, ...] = ("grpo", "rloo", "rest")
PIPELINE_SHAPES = (
    "[sft, reward, ppo|grpo|rloo|rest] or [sft, dpo], with rlaif right before reward or dpo "
    "([sft, rlaif, dpo], [sft, rlaif, reward, ppo|grpo|rloo|rest])"
)
# The stages that can train on an rlaif stage's pairs (always the stage right after it).
AFTER_RLAIF: tuple[StageName, ...] = ("reward", "dpo")

Quantity = Annotated[str, Field(pattern=NON_NEGATIVE_QUANTITY)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]


def _cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class Toleration(CamelModel):
    key: str | None = Field(default=None, max_length=316, description="Taint key to tolerate.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty matches all."
    )
    toleration_seconds: int | None = Field(default=None, description="NoExecute: how long to stay bound.")


class NodePool(CamelModel):
    """Which nodes a stage's pods land on."""

    accelerator: Accelerator | None = Field(
        default=None,
        description=(
            "Shorthand for the GPU model: adds the GPU feature-discovery label "
            f"{GPU_PRODUCT_LABEL} to the node selector."
        ),
    )
    node_selector: dict[str, LabelValue] = Field(default_factory=dict, description="Node labels that must match.")
    affinity: dict[str, Any] | None = Field(
        default=None, description="A core/v1 Affinity, passed to the pods unchanged."
    )
    tolerations: list[Toleration] | None = Field(
        default=None,
        max_length=32,
        description="Taints to tolerate. Unset: tolerate the nvidia.com/gpu taint when GPUs are requested.",
    )


class ResourceRequirements(CamelModel):
    requests: dict[str, Quantity] = Field(default_factory=dict, description="e.g. {cpu: '8', memory: 64Gi}.")
    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="e.g. {memory: 128Gi}. GPUs come from gpusPerWorker."
    )

    @field_validator("requests", "limits", mode="before")
    @classmethod
    def _quantities(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name, quantity in value.items():
                try:
                    check_quantity(quantity, NON_NEGATIVE_QUANTITY)
                except ValueError as error:
                    raise ValueError(f"{name}: {error}") from None
        return value


class Placement(CamelModel):
    """Where and how big a stage's job runs. Stage-level placement overrides the run's, field by field."""

    image: str | None = Field(
        default=None, max_length=512, description="Trainer image. Default: the operator's configured trainer image."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Pull policy for the trainer image."
    )
    node_pool: NodePool | None = Field(default=None, description="Node selection for the stage's pods.")
    workers: int | None = Field(
        default=None, ge=1, le=512, description="Pods (one Master plus workers-1 Workers). Default 1."
    )
    gpus_per_worker: int | None = Field(
        default=None, ge=0, le=16, description="GPUs per pod, and processes per pod (nprocPerNode). Default 1."
    )
    resources: ResourceRequirements | None = Field(default=None, description="CPU/memory requests and limits.")
    shm_size: str | None = Field(
        default=None, pattern=POSITIVE_QUANTITY, description="Size of the memory-backed /dev/shm. Default 16Gi."
    )
    priority_class_name: str | None = Field(default=None, max_length=253, description="Pod priority class.")

    @field_validator("shm_size", mode="before")
    @classmethod
    def _shm_size(cls, value: Any) -> Any:
        return check_quantity(value, POSITIVE_QUANTITY)

    termination_grace_period_seconds: int | None = Field(
        default=None,
        ge=30,
        le=86400,
        description=(
            "How long a stage's pods get after SIGTERM (node drain, spot reclaim, Kueue preemption) to "
            "checkpoint the current step before they are killed. Default 600."
        ),
    )
    strategy: Strategy | None = Field(
        default=None,
        description=(
            "ddp: every GPU holds a whole model copy (data parallel). fsdp: parameters, gradients and "
            "optimizer state are sharded over all the stage's GPUs, for models that do not fit one GPU "
            "(PyTorch FSDP2; not with 8-bit quantization). Default ddp."
        ),
    )
    fsdp_offload: bool | None = Field(
        default=None,
        description="fsdp only: keep the shards in CPU memory between uses (slower, fits larger models).",
    )


class StageControl(CamelModel):
    """Operator-side settings common to every stage section."""

    # Optional here (required by the trainer): a skipped stage (existingOutput) needs no data.
    dataset: DatasetConfig | None = Field(  # type: ignore[assignment]
        default=None, description="Training data for this stage (required unless existingOutput is set)."
    )

    placement: Placement | None = Field(default=None, description="Overrides of the run's placement for this stage.")
    retries: int = Field(
        default=2, ge=0, le=20, description="Re-runs after a failure (the trainer resumes from its checkpoint)."
    )
    retry_backoff_seconds: int = Field(
        default=60,
        ge=0,
        le=86400,
        description="Wait before the first retry; doubles each further retry, up to 360 s (or this value if larger).",
    )
    existing_output: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description=(
            "Skip this stage and use this merged model instead (a path on the volume or a hub id), "
            "e.g. start PPO from an existing SFT model."
        ),
    )


class SFTSection(StageControl, SFTStageConfig):
    """Supervised fine-tuning of the base model on demonstrations."""


class RewardSection(StageControl, RewardStageConfig):
    """Reward model trained on preference pairs (chosen vs rejected)."""


class PPOSection(StageControl, PPOStageConfig):
    """PPO against the reward model, KL-penalized towards the SFT policy."""


class DPOSection(StageControl, DPOStageConfig):
    """Direct preference optimization of the SFT policy."""


class GRPOSection(StageControl, GRPOStageConfig):
    """GRPO (TRL GRPOTrainer): group-relative policy optimization against the reward sources."""


class RLOOSection(StageControl, RLOOStageConfig):
    """RLOO (TRL RLOOTrainer): REINFORCE with a leave-one-out baseline against the reward sources."""


class RestSection(StageControl, RestStageConfig):
    """ReST: Grow (sample and score with the reward model), Improve (filter and fine-tune), repeated."""


class RlaifSection(StageControl, RlaifStageConfig):
    """RLAIF: a judge model labels pairs of policy samples; the next stage (reward or dpo) trains on them."""


class SecretKeyRef(CamelModel):
    name: str = Field(min_length=1, max_length=253, description="Secret name in the run's namespace.")
    key: str = Field(min_length=1, max_length=253, description="Key within the Secret.")


class SecretRefs(CamelModel):
    """Credentials, only as references to Secrets: never literal values in the spec."""

    hf_token: SecretKeyRef | None = Field(default=None, description="Hugging Face token (env HF_TOKEN).")
    wandb_api_key: SecretKeyRef | None = Field(
        default=None, description="Weights & Biases key (env WANDB_API_KEY); enables W&B logging."
    )

    @field_validator("hf_token", "wandb_api_key", mode="before")
    @classmethod
    def _reference_only(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("must be a reference to a Secret ({name: ..., key: ...}), never a literal value")
        return value


class Storage(CamelModel):
    """The volume holding every stage's checkpoints and outputs."""

    existing_claim: str | None = Field(
        default=None, max_length=253, description="Use this PVC instead of creating one."
    )
    size: str = Field(
        default="100Gi", pattern=POSITIVE_QUANTITY, description="Size of the PVC the operator creates (more than 0)."
    )

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return check_quantity(value, POSITIVE_QUANTITY)

    storage_class_name: str | None = Field(
        default=None, max_length=253, description="Storage class; cluster default when unset."
    )
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] = Field(
        default="ReadWriteMany",
        description="ReadWriteMany lets multi-node stages share the volume.",
    )
    retention: Literal["Retain", "Delete"] = Field(
        default="Retain",
        description="What happens to a created PVC when the run is deleted. Retain: checkpoints are expensive.",
    )
    mount_path: str = Field(
        default="/workspace", pattern=r"^/[^\s]*$", description="Where the volume is mounted in pods."
    )


StageSection = (
    SFTSection | RewardSection | PPOSection | DPOSection | GRPOSection | RLOOSection | RestSection | RlaifSection
)


def _default_pipeline() -> list[StageName]:
    return ["sft", "reward", "ppo"]


class RLHFRunSpec(CamelModel):
    """Desired state of an RLHF training run."""

    model: ModelConfig = Field(description="The base model every stage starts from. Immutable.")
    pipeline: list[StageName] = Field(
        default_factory=_default_pipeline,
        min_length=1,
        max_length=4,
        description=f"Ordered stages: a subsequence of {PIPELINE_SHAPES}. Immutable.",
    )
    sft: SFTSection | None = Field(default=None, description="Supervised fine-tuning stage.")
    reward: RewardSection | None = Field(default=None, description="Reward model stage.")
    ppo: PPOSection | None = Field(default=None, description="PPO stage.")
    dpo: DPOSection | None = Field(default=None, description="DPO stage.")
    rest: RestSection | None = Field(default=None, description="ReST stage (Reinforced Self-Training).")
    rlaif: RlaifSection | None = Field(default=None, description="RLAIF stage (AI-labelled preference pairs).")
    grpo: GRPOSection | None = Field(default=None, description="GRPO stage.")
    rloo: RLOOSection | None = Field(default=None, description="RLOO stage.")
    placement: Placement = Field(default_factory=Placement, description="Default placement for every stage.")
    storage: Storage = Field(default_factory=Storage, description="The run's volume.")
    secrets: SecretRefs = Field(default_factory=SecretRefs, description="Secret references.")
    launcher: Literal["pytorchjob", "trainjob"] = Field(
        default="pytorchjob",
        description="pytorchjob: Kubeflow training operator v1. trainjob: Kubeflow Trainer v2 TrainJob.",
    )
    runtime_ref: str = Field(
        default="torch-distributed",
        max_length=253,
        description="trainjob launcher: the ClusterTrainingRuntime to use.",
    )
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        pattern=LABEL_VALUE,
        description="Kueue LocalQueue: jobs get the kueue.x-k8s.io/queue-name label and start suspended.",
    )
    suspend: bool = Field(default=False, description="Suspend the running stage; false resumes it.")
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=60,
        description=(
            "Delete each finished stage job (and its pods) after this many seconds. At least 60: "
            "the operator reads the stage result from the Master pod when the job finishes."
        ),
    )
    wandb_project: str | None = Field(
        default=None, max_length=128, description="W&B project (needs secrets.wandbApiKey)."
    )
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig,
        description="The side-by-side comparison run after the final stage (<run>/eval/).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RLHFRunSpec:
        errors = pipeline_errors(self)
        if errors:
            # one line per problem, each "field: message"; validation.format_errors splits them
            raise field_errors(errors)
        return self

    def section(self, stage: StageName) -> StageSection | None:
        section: StageSection | None = getattr(self, stage)
        return section

    def provided(self, stage: StageName) -> bool:
        """The stage's output exists already (existingOutput), so it is not run."""
        section = self.section(stage)
        return section is not None and section.existing_output is not None


def pipeline_errors(spec: RLHFRunSpec) -> list[str]:
    """Cross-field rules, each message starting with the field it is about."""
    errors: list[str] = []
    pipeline = list(spec.pipeline)
    if pipeline not in ALLOWED_PIPELINES:
        errors.append(
            f"pipeline: {pipeline} is not an ordered subsequence of {PIPELINE_SHAPES}"
            + (" (dpo cannot follow reward or be combined with ppo)" if "dpo" in pipeline else "")
            + (" (rlaif must be followed by reward or dpo)" if "rlaif" in pipeline else "")
            + (" (rest comes last, after sft and/or reward)" if "rest" in pipeline else "")
        )
        return errors
    for stage in pipeline:
        section = spec.section(stage)
        if section is None:
            errors.append(f"{stage}: the pipeline runs '{stage}' but spec.{stage} is missing")
        elif section.dataset is None and section.existing_output is None and not follows_rlaif(spec, stage):
            errors.append(f"{stage}.dataset: required unless {stage}.existingOutput is set")
    errors += _rest_rlaif_errors(spec)
    if "ppo" in pipeline:
        if "reward" not in pipeline and not spec.provided("reward"):
            errors.append(
                "pipeline: ppo needs a reward model: add 'reward' to the pipeline or set reward.existingOutput"
            )
        if "sft" not in pipeline and not spec.provided("sft"):
            errors.append("pipeline: ppo needs an SFT model: add 'sft' to the pipeline or set sft.existingOutput")
    errors += _reward_source_errors(spec, pipeline)
    for stage in STAGES:
        section = spec.section(stage)
        if section is not None and stage not in pipeline and section.existing_output is None:
            errors.append(f"{stage}: section given but '{stage}' is not in the pipeline (and has no existingOutput)")
    if spec.secrets.wandb_api_key is None and spec.wandb_project:
        errors.append("wandbProject: needs secrets.wandbApiKey")
    for stage in pipeline:
        errors += _sharding_errors(spec, stage)
    return errors


def stage_strategy(spec: RLHFRunSpec, stage: StageName) -> tuple[Strategy, bool]:
    """(strategy, fsdpOffload) of a stage: its placement's, else the run's, else (ddp, false)."""
    section = spec.section(stage)
    own = section.placement if section is not None and section.placement is not None else Placement()
    strategy = own.strategy or spec.placement.strategy or "ddp"
    offload = own.fsdp_offload if own.fsdp_offload is not None else bool(spec.placement.fsdp_offload)
    return strategy, offload


def _placement_field(spec: RLHFRunSpec, stage: StageName, name: str) -> str:
    """The path of the placement field that decided a stage's value (its own, else the run's)."""
    section = spec.section(stage)
    own = section.placement if section is not None else None
    alias = Placement.model_fields[name].alias or name
    return f"{stage}.placement.{alias}" if own is not None and name in own.model_fields_set else f"placement.{alias}"


def _sharding_errors(spec: RLHFRunSpec, stage: StageName) -> list[str]:
    section = spec.section(stage)
    if section is None or section.existing_output is not None:
        return []
    strategy, offload = stage_strategy(spec, stage)
    errors = []
    if strategy == "fsdp" and section.quantization.mode == "8bit":
        errors.append(
            f"{stage}.quantization.mode: 8bit weights cannot be sharded ({_placement_field(spec, stage, 'strategy')} "
            "is fsdp): use 4bit-nf4 or none with fsdp, or strategy ddp with 8bit"
        )
    if offload and strategy != "fsdp":
        errors.append(
            f"{_placement_field(spec, stage, 'fsdp_offload')}: needs strategy fsdp ({stage} runs with {strategy})"
        )
    return errors


def _reward_source_errors(spec: RLHFRunSpec, pipeline: list[StageName]) -> list[str]:
    """A rewardModel source needs the reward stage's model: in the pipeline, or existingOutput."""
    if "reward" in pipeline or spec.provided("reward"):
        return []
    errors = []
    for stage in REWARD_SOURCE_STAGES:
        section = spec.section(stage)
        if stage not in pipeline or section is None or section.existing_output is not None:
            continue
        rewards: list[RewardSource] = getattr(section, "rewards", [])
        fix = "add 'reward' to the pipeline or set reward.existingOutput"
        if "rewards" not in section.model_fields_set:
            errors.append(f"{stage}.rewards: the default source is the reward stage's model: {fix}, or list rewards")
        for index, source in enumerate(rewards if "rewards" in section.model_fields_set else []):
            if source.type == "rewardModel":
                errors.append(f"{stage}.rewards[{index}].type: rewardModel needs the reward stage's model: {fix}")
    return errors


def _reward_source_cel(stage: StageName) -> dict[str, str]:
    return _cel(
        f"!has(self.pipeline) || !('{stage}' in self.pipeline) || !has(self.{stage})"
        f" || has(self.{stage}.existingOutput) || 'reward' in self.pipeline"
        " || (has(self.reward) && has(self.reward.existingOutput))"
        f" || (has(self.{stage}.rewards) && self.{stage}.rewards.all(r, r.type != 'rewardModel'))",
        f"{stage}.rewards uses the reward stage's model (type rewardModel, the default): "
        "add 'reward' to the pipeline or set reward.existingOutput",
        f".{stage}",
    )


def follows_rlaif(spec: RLHFRunSpec, stage: StageName) -> bool:
    """The stage trains on the pairs of the rlaif stage right before it (pipelines allow no gap)."""
    return stage in AFTER_RLAIF and "rlaif" in spec.pipeline and stage in spec.pipeline


def _rest_rlaif_errors(spec: RLHFRunSpec) -> list[str]:
    """Issue 11's cross-field rules (mirrored in spec_cel_rules)."""
    errors: list[str] = []
    if spec.rlaif is not None and spec.rlaif.existing_output is not None:
        errors.append(
            "rlaif.existingOutput: rlaif writes preference pairs, not a model; to reuse pairs, give their "
            "file as the next stage's dataset and leave rlaif out of the pipeline"
        )
    for stage in STAGES:
        section = spec.section(stage)
        dataset = section.dataset if section is not None else None
        if dataset is None or dataset.source != RLAIF_SOURCE:
            continue
        if not follows_rlaif(spec, stage):
            errors.append(
                f"{stage}.dataset.source: '{RLAIF_SOURCE}' names the pairs of an rlaif stage, "
                f"but '{stage}' does not follow rlaif in the pipeline"
            )
    for stage in AFTER_RLAIF:
        section = spec.section(stage)
        dataset = section.dataset if section is not None else None
        if follows_rlaif(spec, stage) and dataset is not None and dataset.source != RLAIF_SOURCE:
            errors.append(
                f"{stage}.dataset.source: '{stage}' follows rlaif and trains on its pairs: "
                f"omit {stage}.dataset or set its source to '{RLAIF_SOURCE}'"
            )
    return errors


def _rest_rlaif_cel_rules() -> list[dict[str, str]]:
    in_pipeline = "has(self.pipeline) && '{stage}' in self.pipeline"
    rules = [
        _cel(
            "!has(self.rlaif) || !has(self.rlaif.existingOutput)",
            "rlaif writes preference pairs, not a model: it has no existingOutput",
            ".rlaif",
        ),
    ]
    for stage in STAGES:
        follows = (
            f"({in_pipeline.format(stage='rlaif')} && '{stage}' in self.pipeline)" if stage in AFTER_RLAIF else "false"
        )
        rules.append(
            _cel(
                f"!has(self.{stage}) || !has(self.{stage}.dataset) || self.{stage}.dataset.source != '{RLAIF_SOURCE}'"
                f" || {follows}",
                f"{stage}.dataset.source '{RLAIF_SOURCE}' names the pairs of an rlaif stage, "
                f"but '{stage}' does not follow rlaif in the pipeline",
                f".{stage}",
            )
        )
        if stage in AFTER_RLAIF:
            rules.append(
                _cel(
                    f"!{follows} || !has(self.{stage}) || !has(self.{stage}.dataset)"
                    f" || self.{stage}.dataset.source == '{RLAIF_SOURCE}'",
                    f"{stage} follows rlaif and trains on its pairs: omit {stage}.dataset "
                    f"or set its source to '{RLAIF_SOURCE}'",
                    f".{stage}",
                )
            )
    return rules


def spec_cel_rules() -> list[dict[str, str]]:
    """The cross-field rules the API server checks itself (mirrors pipeline_errors)."""
    allowed = ", ".join("[" + ", ".join(f"'{s}'" for s in p) + "]" for p in ALLOWED_PIPELINES)
    rules = [
        _cel(
            f"!has(self.pipeline) || self.pipeline in [{allowed}]",
            f"pipeline must be an ordered subsequence of {PIPELINE_SHAPES} "
            "(dpo cannot follow reward or be combined with ppo)",
            ".pipeline",
        ),
        _cel(
            "!has(self.pipeline) || !('ppo' in self.pipeline) || 'reward' in self.pipeline"
            " || (has(self.reward) && has(self.reward.existingOutput))",
            "ppo needs a reward model: add 'reward' to the pipeline or set reward.existingOutput",
            ".pipeline",
        ),
        _cel(
            "!has(self.pipeline) || !('ppo' in self.pipeline) || 'sft' in self.pipeline"
            " || (has(self.sft) && has(self.sft.existingOutput))",
            "ppo needs an SFT model: add 'sft' to the pipeline or set sft.existingOutput",
            ".pipeline",
        ),
    ]
    rules += [_reward_source_cel(stage) for stage in REWARD_SOURCE_STAGES]
    rules += _sharding_cel_rules()
    for stage in STAGES:
        default_has = "true" if stage in _default_pipeline() else "false"
        runs = f"(has(self.pipeline) ? '{stage}' in self.pipeline : {default_has})"
        rules.append(
            _cel(
                f"{runs} ? has(self.{stage}) : true",
                f"the pipeline runs '{stage}' but spec.{stage} is missing",
                f".{stage}",
            )
        )
        after_rlaif = (
            f" || (has(self.pipeline) && 'rlaif' in self.pipeline && '{stage}' in self.pipeline)"
            if stage in AFTER_RLAIF
            else ""
        )
        rules.append(
            _cel(
                f"!has(self.{stage}) || has(self.{stage}.existingOutput) || {runs}",
                f"{stage}: section given but '{stage}' is not in the pipeline (and has no existingOutput)",
                f".{stage}",
            )
        )
        rules.append(
            _cel(
                f"!has(self.{stage}) || has(self.{stage}.existingOutput) || has(self.{stage}.dataset){after_rlaif}",
                f"{stage}.dataset is required unless {stage}.existingOutput is set"
                + (" (or it follows rlaif)" if after_rlaif else ""),
                f".{stage}",
            )
        )
    return rules + _rest_rlaif_cel_rules()


def _sharding_cel_rules() -> list[dict[str, str]]:
    """CEL twins of _sharding_errors: a stage's strategy is its placement's, else the run's, else ddp."""
    rules = []
    for stage in STAGES:
        own = f"self.{stage}.placement"

        def resolved(name: str, default: str, own: str = own) -> str:
            return (
                f"((has({own}) && has({own}.{name})) ? {own}.{name} : "
                f"((has(self.placement) && has(self.placement.{name})) ? self.placement.{name} : {default}))"
            )

        runs = f"has(self.{stage}) && !has(self.{stage}.existingOutput)"
        quant = f"self.{stage}.quantization"
        eight_bit = f"has({quant}) && has({quant}.mode) && {quant}.mode == '8bit'"
        strategy = resolved("strategy", "'ddp'")
        offload = resolved("fsdpOffload", "false")
        rules.append(
            _cel(
                f"!({runs} && {eight_bit} && {strategy} == 'fsdp')",
                f"{stage}.quantization.mode: 8bit weights cannot be sharded under strategy fsdp",
                f".{stage}",
            )
        )
        rules.append(
            _cel(
                f"!({runs} && {offload} && {strategy} != 'fsdp')",
                f"{stage}: fsdpOffload needs strategy fsdp",
                f".{stage}",
            )
        )
    return rules


class RunMetadata(CamelModel):
    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    generation: int | None = None

    model_config = CamelModel.model_config | {"extra": "ignore"}


class RLHFRun(CamelModel):
    """A whole object: what `kubectl apply -f` and `rlhf run` read."""

    api_version: Literal["rlhf.dev/v1alpha1"] = Field(description="rlhf.dev/v1alpha1")
    kind: Literal["RLHFRun"]
    metadata: RunMetadata
    spec: RLHFRunSpec

    model_config = CamelModel.model_config | {"extra": "ignore"}  # status, etc. are not input
