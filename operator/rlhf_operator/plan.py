"""plan(run) -> [StagePlan]: pure. Which stages run, from which inputs, into which outputs.

The same plan drives the Kubernetes executor (paths on the PVC) and `rlhf run` (paths under
the local work directory): only `root` differs.
"""

from __future__ import annotations

import posixpath
from typing import Any

from pydantic import BaseModel, ConfigDict
from rlhf_api import layout
from rlhf_api.reward_sources import uses_reward_model
from rlhf_api.spec import ACCELERATOR_PRODUCTS, GPU_PRODUCT_LABEL, Placement, RLHFRun, RLHFRunSpec
from rlhf_api.stage_config import (
    DPOStageConfig,
    GRPOStageConfig,
    ModelConfig,
    PPOStageConfig,
    RewardStageConfig,
    RLOOStageConfig,
    SFTStageConfig,
    StageName,
    TrainerJobConfig,
)

DEFAULT_TRAINER_IMAGE = "ghcr.io/rlhf-dev/rlhf-trainer:0.1.0"
DEFAULT_SHM_SIZE = "16Gi"
GPU_TAINT_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

_TRAINER_SECTIONS: dict[StageName, type[BaseModel]] = {
    "sft": SFTStageConfig,
    "reward": RewardStageConfig,
    "ppo": PPOStageConfig,
    "dpo": DPOStageConfig,
    "grpo": GRPOStageConfig,
    "rloo": RLOOStageConfig,
}


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
    merged_path: str  # what later stages load
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
    )


def _overlay(base: Placement, override: Placement | None) -> Placement:
    if override is None:
        return base
    return base.model_copy(update=override.model_dump(exclude_unset=True, exclude_none=True, by_alias=False))


def _as_model(path: str, base: ModelConfig) -> ModelConfig:
    """A previous stage's merged output, loaded like the base (dtype, remote code)."""
    return ModelConfig(name=path, dtype=base.dtype, trust_remote_code=base.trust_remote_code)


def plan(run: RLHFRun, mount_root: str, default_image: str = DEFAULT_TRAINER_IMAGE) -> list[StagePlan]:
    spec = run.spec
    root = run_root(run, mount_root)
    report_to: list[Any] = ["tensorboard"] + (["wandb"] if spec.secrets.wandb_api_key else [])

    def merged_of(stage: StageName) -> str | None:
        section = spec.section(stage)
        if section is not None and section.existing_output:
            return section.existing_output
        if stage in spec.pipeline:
            return layout.merged_dir(posixpath.join(root, stage))
        return None

    sft_model = merged_of("sft")
    plans: list[StagePlan] = []
    for index, stage in enumerate(spec.pipeline):
        section = spec.section(stage)
        assert section is not None  # RLHFRunSpec validation guarantees it
        output_dir = posixpath.join(root, stage)
        skipped = section.existing_output is not None
        config: TrainerJobConfig | None = None
        if not skipped:
            if stage == "sft":
                start = spec.model
            elif stage == "reward":
                start = _as_model(sft_model, spec.model) if sft_model else spec.model
            else:  # ppo, dpo, grpo, rloo: the policy starts from the SFT model (or the base)
                start = _as_model(sft_model, spec.model) if sft_model else spec.model
            # PPO, and stages with a reward source of type rewardModel, score with the reward stage's model
            scores_with_reward_model = stage == "ppo" or uses_reward_model(getattr(section, "rewards", None))
            reward_path = merged_of("reward") if scores_with_reward_model else None
            trainer_fields = _TRAINER_SECTIONS[stage].model_fields
            config = TrainerJobConfig.model_validate(
                {
                    "stage": stage,
                    "run_name": run.metadata.name,
                    "model": start,
                    "reward_model": _as_model(reward_path, spec.model) if reward_path else None,
                    "output_dir": output_dir,
                    "work_dir": root,
                    "report_to": report_to,
                    stage: section.model_dump(include=set(trainer_fields)),
                }
            )
        plans.append(
            StagePlan(
                name=stage,
                index=index,
                skipped=skipped,
                output_dir=output_dir,
                merged_path=merged_of(stage) or layout.merged_dir(output_dir),
                config=config,
                placement=resolve_placement(spec, stage, default_image),
                retries=section.retries,
                retry_backoff_seconds=section.retry_backoff_seconds,
            )
        )
    return plans
