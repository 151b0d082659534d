"""The RLHFRun custom resource: the one schema source. crds/ is generated from these models.

Stage sections reuse the trainer's config models (each kind's, rlhf_api.stages.<kind>), so what a
user writes under `spec.sft` is exactly what the SFT program reads; placement and retries are
added here. There is one section per registered kind; the cross-field rules are in rlhf_api.rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, create_model, field_validator, model_validator

from .camel_model import CamelModel, field_errors
from .guards import Guards
from .model_config import ModelConfig
from .quantity import LABEL_VALUE, NON_NEGATIVE_QUANTITY, POSITIVE_QUANTITY, check_quantity
from .rules import DEFAULT_PIPELINE, PIPELINE_SHAPES, pipeline_errors
from .stage_config import DatasetConfig, EvaluationConfig, StageCommon, Strategy
from .stages import STAGE_KINDS, StageName
from .stages.kind import StageKind

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

Quantity = Annotated[str, Field(pattern=NON_NEGATIVE_QUANTITY)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]


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
    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description=(
            "ServiceAccount the stage's pods run as. Default: the namespace's default account. Its API "
            "token is never mounted (automountServiceAccountToken: false): the trainer needs no API "
            "access; give this account cloud IAM (workload identity) bindings, e.g. for a bucket."
        ),
    )

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
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=31_536_000,
        description=(
            "Longest one attempt (one job) of this stage may run, counted from its start; past it the "
            "job is stopped and the attempt fails (retried like any failure, resuming from its checkpoint). "
            "Passed to the job (runPolicy.activeDeadlineSeconds / TrainJob activeDeadlineSeconds). "
            "Default: no limit."
        ),
    )
    start_deadline_seconds: int = Field(
        default=1800,
        ge=30,
        le=604_800,
        description=(
            "Longest an attempt's pods may wait to start (image pull, a missing Secret or ConfigMap, "
            "unschedulable, pods refused by admission such as Pod Security) before the attempt fails. "
            "The reason shows in the stage's message and a Warning event as soon as it is seen. "
            "Default 1800 (30 min: room for a large image pull or a cluster autoscaler adding a GPU node)."
        ),
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
    progress_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=604800,
        description=(
            "Hang detection: no progress event for this long while the stage's job runs ends the attempt "
            "(Warning StageStalled) and retries it from its last checkpoint, a counted retry. Unset: off. "
            "The time to load the models and reach the first step has its own allowance, "
            "startupProgressDeadlineSeconds."
        ),
    )
    startup_progress_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=604800,
        description=(
            "With progressDeadlineSeconds: the allowance from the attempt's start to its first progress event "
            "(model loading, data preparation, the first step). Unset: 3 x progressDeadlineSeconds, at least 30 min."
        ),
    )
    guards: Guards | None = Field(
        default=None,
        description="RL health limits checked on every progress event (a non-finite loss always trips).",
    )


def _section_class(kind: StageKind) -> type[StageControl]:
    """`<Kind>Section(StageControl, <Kind>StageConfig)`: what a user writes under spec.<kind>."""
    name = kind.config.__name__.removesuffix("StageConfig") + "Section"
    return type(name, (StageControl, kind.config), {"__doc__": kind.section_doc, "__module__": __name__})


if TYPE_CHECKING:

    class Section(StageControl, StageCommon):  # type: ignore[misc]
        """What mypy knows of any spec section: StageControl plus the common stage config."""

else:
    Section = StageControl


# The spec section class of every registered kind: the kind's config plus placement and retries.
SECTIONS: dict[str, type[StageControl]] = {name: _section_class(kind) for name, kind in STAGE_KINDS.items()}


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


def _default_pipeline() -> list[StageName]:
    return list(DEFAULT_PIPELINE)


class _RunSpecHead(CamelModel):
    """The fields before the stage sections (the CRD's order)."""

    model: ModelConfig = Field(description="The base model every stage starts from. Immutable.")
    pipeline: list[StageName] = Field(
        default_factory=_default_pipeline,
        min_length=1,
        max_length=4,
        description=f"Ordered stages, one of {PIPELINE_SHAPES}. Immutable.",
    )


# One optional section per registered kind: spec.sft, spec.reward, ...
if TYPE_CHECKING:
    _RunSpecSections = _RunSpecHead
else:
    _RunSpecSections = create_model(
        "_RunSpecSections",
        __base__=_RunSpecHead,
        **{
            name: (SECTIONS[name] | None, Field(default=None, description=kind.spec_description))
            for name, kind in STAGE_KINDS.items()
        },
    )


class RLHFRunSpec(_RunSpecSections):
    """Desired state of an RLHF training run."""

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

    def section(self, stage: StageName) -> Section | None:
        """The stage's section (its kind's config plus StageControl), None when not given."""
        section: Section | None = getattr(self, stage)
        return section

    def provided(self, stage: StageName) -> bool:
        """The stage's output exists already (existingOutput), so it is not run."""
        section = self.section(stage)
        return section is not None and section.existing_output is not None


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
