"""plan(run) -> [StagePlan]: pure. Which stages run, from which inputs, into which outputs.

The same plan drives the Kubernetes executor (paths on the PVC) and `rlhf run` (paths under
the local work directory): only `root` differs.
"""

from __future__ import annotations

import posixpath
from typing import Any

from pydantic import BaseModel, ConfigDict
from rlhf_api import layout
from rlhf_api.reward_sources import RewardSource, uses_reward_model
from rlhf_api.rlaif_config import RLAIF_SOURCE
from rlhf_api.spec import (
    ACCELERATOR_PRODUCTS,
    GPU_PRODUCT_LABEL,
    Placement,
    RLHFRun,
    RLHFRunSpec,
    follows_rlaif,
    stage_strategy,
)
from rlhf_api.stage_config import (
    POLICY_STAGES,
    CompareConfig,
    DatasetConfig,
    DPOStageConfig,
    GRPOStageConfig,
    InputRole,
    PPOStageConfig,
    RestStageConfig,
    RewardStageConfig,
    RlaifStageConfig,
    RLOOStageConfig,
    SFTStageConfig,
    StageInput,
    StageName,
    TrainerJobConfig,
    eval_max_new_tokens,
    ppo_needs_reward_model,
)

DEFAULT_TRAINER_IMAGE = "ghcr.io/rlhf-dev/rlhf-trainer:0.1.0"
DEFAULT_SHM_SIZE = "16Gi"
# Time to write a checkpoint at SIGTERM: a 7B LoRA step saves in seconds, full fine-tuning of a
# large model on a network volume takes minutes.
DEFAULT_TERMINATION_GRACE_SECONDS = 600
GPU_TAINT_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

_TRAINER_SECTIONS: dict[StageName, type[BaseModel]] = {
    "sft": SFTStageConfig,
    "reward": RewardStageConfig,
    "ppo": PPOStageConfig,
    "dpo": DPOStageConfig,
    "grpo": GRPOStageConfig,
    "rloo": RLOOStageConfig,
    "rest": RestStageConfig,
    "rlaif": RlaifStageConfig,
}
# Stages whose output is data, not a model: nothing for a later stage to load.
_NO_MODEL: frozenset[StageName] = frozenset({"rlaif"})


class ResolvedPlacement(BaseModel):
    """Run-level placement overlaid with the stage's, defaults filled in."""

    model_config = ConfigDict(frozen=True)

    image: str
    image_pull_policy: str | None
    workers: int
    gpus_per_worker: int
    node_selector: dict[str, str]
    affinity: dict[str, Any] | None
    tolerations: list[dict[str, Any]]
    requests: dict[str, str]
    limits: dict[str, str]
    shm_size: str
    priority_class_name: str | None
    termination_grace_period_seconds: int

    @property
    def processes_per_worker(self) -> int:
        """torchrun processes per pod: one per GPU, or one on a CPU-only pod."""
        return max(1, self.gpus_per_worker)


class StagePlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: StageName
    index: int
    skipped: bool  # existingOutput given: nothing runs, the output is taken as is
    output_dir: str
    merged_path: str | None  # what later stages load (None: the stage writes data, e.g. rlaif)
    config: TrainerJobConfig | None  # None when skipped
    placement: ResolvedPlacement
    retries: int
    retry_backoff_seconds: int

    def config_file(self) -> dict[str, Any]:
        assert self.config is not None
        return self.config.to_file_dict()


def run_root(run: RLHFRun, mount_root: str) -> str:
    """`<mount>/<run-name>`: the PVC mount in pods, the --workdir locally."""
    return posixpath.join(mount_root, run.metadata.name)


def resolve_placement(spec: RLHFRunSpec, stage: StageName, default_image: str) -> ResolvedPlacement:
    section = spec.section(stage)
    merged = _overlay(spec.placement, section.placement if section else None)
    pool = merged.node_pool
    node_selector = dict(pool.node_selector) if pool else {}
    if pool and pool.accelerator:
        node_selector.setdefault(GPU_PRODUCT_LABEL, ACCELERATOR_PRODUCTS[pool.accelerator])
    gpus = merged.gpus_per_worker if merged.gpus_per_worker is not None else 1
    if pool and pool.tolerations is not None:
        tolerations = [t.model_dump(by_alias=True, exclude_none=True) for t in pool.tolerations]
    else:
        # GPU node pools are usually tainted so that only GPU work lands there.
        tolerations = [dict(GPU_TAINT_TOLERATION)] if gpus > 0 else []
    resources = merged.resources
    return ResolvedPlacement(
        image=merged.image or default_image,
        image_pull_policy=merged.image_pull_policy,
        workers=merged.workers or 1,
        gpus_per_worker=gpus,
        node_selector=node_selector,
        affinity=pool.affinity if pool else None,
        tolerations=tolerations,
        requests=dict(resources.requests) if resources else {},
        limits=dict(resources.limits) if resources else {},
        shm_size=merged.shm_size or DEFAULT_SHM_SIZE,
        priority_class_name=merged.priority_class_name,
        termination_grace_period_seconds=merged.termination_grace_period_seconds or DEFAULT_TERMINATION_GRACE_SECONDS,
    )


def _overlay(base: Placement, override: Placement | None) -> Placement:
    if override is None:
        return base
    # Validated again: model_copy(update=) would leave nested models (nodePool, resources) as dicts.
    merged = base.model_dump(exclude_unset=True) | override.model_dump(exclude_unset=True, exclude_none=True)
    return Placement.model_validate(merged)


_DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".arrow", ".txt")


def on_volume(path: str, mount_root: str, data_file: bool = False) -> str:
    """A relative path in the spec, resolved against the volume root (storage.mountPath in pods,
    the work directory locally), so one RLHFRun means the same files on a laptop and a cluster.

    Relative means `./x` or `../x`, or for datasets a bare file name with a data suffix
    (`data/train.jsonl`); `org/name` stays a hub id, `builtin:` and absolute paths stay as they are.
    """
    if path.startswith(("./", "../")) or (
        data_file and not path.startswith("/") and ":" not in path and path.endswith(_DATA_FILE_SUFFIXES)
    ):
        return posixpath.normpath(posixpath.join(mount_root, path))
    return path


def _on_volume_section(section: Any, mount_root: str) -> Any:
    """The stage section with its dataset source and models resolved by on_volume."""
    update: dict[str, Any] = {}
    dataset = getattr(section, "dataset", None)
    if dataset is not None:
        source = on_volume(dataset.source, mount_root, data_file=True)
        if source != dataset.source:
            update["dataset"] = dataset.model_copy(update={"source": source})
    for field in ("base_model", "judge"):  # reward's own base, rlaif's judge
        model = getattr(section, field, None)
        if model is not None and model.name is not None:  # an endpoint judge has no name
            name = on_volume(model.name, mount_root)
            if name != model.name:
                update[field] = model.model_copy(update={"name": name})
    rewards = getattr(section, "rewards", None)
    if rewards:
        resolved = [_on_volume_source(source, mount_root) for source in rewards]
        if resolved != rewards:
            update["rewards"] = resolved
    return section.model_copy(update=update) if update else section


def _on_volume_source(source: RewardSource, mount_root: str) -> RewardSource:
    """A reward source's classifier path (like any model) and its pythonPath (always a directory
    on the volume when relative) resolved against the volume root."""
    update: dict[str, Any] = {}
    if source.model is not None and on_volume(source.model.name, mount_root) != source.model.name:
        update["model"] = source.model.model_copy(update={"name": on_volume(source.model.name, mount_root)})
    if source.python_path is not None and not source.python_path.startswith("/"):
        update["python_path"] = posixpath.normpath(posixpath.join(mount_root, source.python_path))
    return source.model_copy(update=update) if update else source


def _rlaif_wiring(
    spec: RLHFRunSpec, stage: StageName, root: str, mount_root: str, section_data: dict[str, Any]
) -> dict[str, Any]:
    """The stage right after rlaif trains on its pairs file; task_accuracy still uses rlaif's prompts.

    The user omits the stage's dataset or writes `source: rlaif` (keeping e.g. evalFraction)."""
    if not follows_rlaif(spec, stage):
        return {}
    assert spec.rlaif is not None and spec.rlaif.dataset is not None  # RLHFRunSpec validation
    given = section_data.get("dataset") or {"source": RLAIF_SOURCE}
    pairs = layout.rlaif_pairs(posixpath.join(root, "rlaif"))
    section_data["dataset"] = {**given, "source": pairs, "format": "preference"}
    prompts = _on_volume_section(spec.rlaif, mount_root).dataset
    return {"eval_task": DatasetConfig.model_validate(prompts.model_dump())}


def _compare(spec: RLHFRunSpec, stage: StageName, index: int, reward_path: str | None) -> CompareConfig | None:
    """The final stage's program compares its starting and trained model after training."""
    evaluation = spec.evaluation
    if not evaluation.enabled or index != len(spec.pipeline) - 1 or stage not in POLICY_STAGES:
        return None
    section = spec.section(stage)
    assert section is not None
    default_tokens = eval_max_new_tokens(section)
    return CompareConfig(
        prompts=evaluation.prompts,
        max_new_tokens=evaluation.max_new_tokens or default_tokens,
        reward_model=spec.model.weights_at(reward_path) if reward_path else None,
    )


def plan(run: RLHFRun, mount_root: str, default_image: str = DEFAULT_TRAINER_IMAGE) -> list[StagePlan]:
    spec = run.spec
    root = run_root(run, mount_root)
    base_model = spec.model.model_copy(update={"name": on_volume(spec.model.name, mount_root)})
    report_to: list[Any] = ["tensorboard"] + (["wandb"] if spec.secrets.wandb_api_key else [])

    def merged_of(stage: StageName) -> str | None:
        section = spec.section(stage)
        if section is not None and section.existing_output:
            return on_volume(section.existing_output, mount_root)
        if stage in spec.pipeline and stage not in _NO_MODEL:
            return layout.merged_dir(posixpath.join(root, stage))
        return None

    def produced(stage: StageName, role: InputRole) -> list[StageInput]:
        """An earlier stage of this run as an input (none for existingOutput: it has no result.json)."""
        section = spec.section(stage)
        if stage not in spec.pipeline or section is None or section.existing_output:
            return []
        return [StageInput(stage=stage, output_dir=posixpath.join(root, stage), role=role)]

    sft_model = merged_of("sft")
    plans: list[StagePlan] = []
    for index, stage in enumerate(spec.pipeline):
        section = spec.section(stage)
        assert section is not None  # RLHFRunSpec validation guarantees it
        output_dir = posixpath.join(root, stage)
        skipped = section.existing_output is not None
        config: TrainerJobConfig | None = None
        if not skipped:
            # sft starts from the base model; every later stage from the SFT model when there is one.
            start = spec.model.weights_at(sft_model) if sft_model and stage != "sft" else base_model
            # PPO, and stages with a reward source of type rewardModel, score with the reward stage's model
            scores_with_reward_model = (stage == "ppo" and ppo_needs_reward_model(spec.ppo)) or uses_reward_model(
                getattr(section, "rewards", None)
            )
            reward_path = merged_of("reward") if scores_with_reward_model else None
            strategy, fsdp_offload = stage_strategy(spec, stage)
            # Every later stage starts from the SFT model, except a reward stage with its own baseModel.
            uses_sft = stage != "sft" and not (isinstance(section, RewardStageConfig) and section.base_model)
            inputs = (produced("sft", "model") if uses_sft else []) + (
                produced("reward", "rewardModel") if scores_with_reward_model else []
            )
            if follows_rlaif(spec, stage):  # its data is the rlaif stage's pairs
                inputs += produced("rlaif", "dataset")
            trainer_fields = _TRAINER_SECTIONS[stage].model_fields
            section_data = _on_volume_section(section, mount_root).model_dump(include=set(trainer_fields))
            wiring = _rlaif_wiring(spec, stage, root, mount_root, section_data)
            config = TrainerJobConfig.model_validate(
                {
                    "stage": stage,
                    "run_name": run.metadata.name,
                    "model": start,
                    "reward_model": spec.model.weights_at(reward_path) if reward_path else None,
                    "output_dir": output_dir,
                    "work_dir": root,
                    "report_to": report_to,
                    "strategy": strategy,
                    "fsdp_offload": fsdp_offload,
                    "inputs": inputs,
                    "compare": _compare(spec, stage, index, merged_of("reward")),
                    stage: section_data,
                    **wiring,
                }
            )
        plans.append(
            StagePlan(
                name=stage,
                index=index,
                skipped=skipped,
                output_dir=output_dir,
                merged_path=merged_of(stage) or (None if stage in _NO_MODEL else layout.merged_dir(output_dir)),
                config=config,
                placement=resolve_placement(spec, stage, default_image),
                retries=section.retries,
                retry_backoff_seconds=section.retry_backoff_seconds,
            )
        )
    return plans
