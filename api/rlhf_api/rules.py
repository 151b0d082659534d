"""The RLHFRun spec's cross-field rules: each Python check beside its CEL twin.

The pydantic validator (RLHFRunSpec -> pipeline_errors) and the API server (spec_cel_rules, in
the CRD) must accept the same specs; tests/foundation/test_rules.py feeds both the same table of
cases. What differs between stage kinds comes from the registry (rlhf_api.stages), never from
stage names written here; the rlaif rules name rlaif because they are about that kind's pairs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .rlaif_config import RLAIF_SOURCE
from .stage_config import StageCommon, Strategy
from .stages import STAGE_KINDS, STAGES, StageName
from .stages.kind import StageKind

if TYPE_CHECKING:
    from .spec import RLHFRunSpec

# The pipeline when the spec names none.
DEFAULT_PIPELINE: tuple[StageName, ...] = ("sft", "reward", "ppo")
# Every pipeline the operator accepts: each kind declares the pipelines that end with it.
ALLOWED_PIPELINES: list[list[str]] = [list(p) for kind in STAGE_KINDS.values() for p in kind.pipelines]


def pipeline_shapes(pipelines: list[list[str]]) -> str:
    """The accepted pipelines in short: those that share all but their last stage in one group,
    e.g. "[sft, reward, ppo|grpo]". Derived from the registry, so a new kind's pipelines show up
    in the error messages and the CRD's description without an edit here."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for pipeline in pipelines:
        groups.setdefault(tuple(pipeline[:-1]), []).append(pipeline[-1])
    return ", ".join("[" + ", ".join([*prefix, "|".join(lasts)]) + "]" for prefix, lasts in groups.items())


PIPELINE_SHAPES = pipeline_shapes(ALLOWED_PIPELINES)
# Why a pipeline with these kinds may not be accepted (the CEL message; Python names only the kinds present).
PIPELINE_HINTS = "; ".join(k.pipeline_hint for k in STAGE_KINDS.values() if k.pipeline_hint)
# Stages whose `rewards` list may name the reward stage's model (type rewardModel).
REWARD_SOURCE_STAGES: tuple[StageName, ...] = tuple(n for n, k in STAGE_KINDS.items() if k.accepts_reward_sources)
# The stages that can train on an rlaif stage's pairs (always the stage right after it).
AFTER_RLAIF: tuple[StageName, ...] = tuple(n for n, k in STAGE_KINDS.items() if k.can_follow_rlaif)


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def pipeline_errors(spec: RLHFRunSpec) -> list[str]:
    """Cross-field rules, each message starting with the field it is about (CEL: spec_cel_rules)."""
    errors: list[str] = []
    pipeline = list(spec.pipeline)
    if pipeline not in ALLOWED_PIPELINES:
        hints = [f" ({k.pipeline_hint})" for name, k in STAGE_KINDS.items() if k.pipeline_hint and name in pipeline]
        errors.append(f"pipeline: {pipeline} is not one of {PIPELINE_SHAPES}" + "".join(hints))
        return errors
    for stage in pipeline:
        section = spec.section(stage)
        if section is None:
            errors.append(f"{stage}: the pipeline runs '{stage}' but spec.{stage} is missing")
        elif section.dataset is None and section.existing_output is None and not follows_rlaif(spec, stage):
            errors.append(f"{stage}.dataset: required unless {stage}.existingOutput is set")
    errors += _rest_rlaif_errors(spec)
    errors += _requires_errors(spec, pipeline)
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


def spec_cel_rules() -> list[dict[str, str]]:
    """The cross-field rules the API server checks itself (the twins of pipeline_errors)."""
    allowed = ", ".join("[" + ", ".join(f"'{s}'" for s in p) + "]" for p in ALLOWED_PIPELINES)
    rules = [
        cel(
            f"!has(self.pipeline) || self.pipeline in [{allowed}]",
            f"pipeline must be one of {PIPELINE_SHAPES} ({PIPELINE_HINTS})",
            ".pipeline",
        ),
    ]
    rules += _requires_cel_rules()
    rules += [_reward_source_cel(stage) for stage in REWARD_SOURCE_STAGES]
    rules += _sharding_cel_rules()
    for stage in STAGES:
        default_has = "true" if stage in DEFAULT_PIPELINE else "false"
        runs = f"(has(self.pipeline) ? '{stage}' in self.pipeline : {default_has})"
        rules.append(
            cel(
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
            cel(
                f"!has(self.{stage}) || has(self.{stage}.existingOutput) || {runs}",
                f"{stage}: section given but '{stage}' is not in the pipeline (and has no existingOutput)",
                f".{stage}",
            )
        )
        rules.append(
            cel(
                f"!has(self.{stage}) || has(self.{stage}.existingOutput) || has(self.{stage}.dataset){after_rlaif}",
                f"{stage}.dataset is required unless {stage}.existingOutput is set"
                + (" (or it follows rlaif)" if after_rlaif else ""),
                f".{stage}",
            )
        )
    return rules + _rest_rlaif_cel_rules()


# ---- a kind's `requires`: stages that must run before it or be given (ppo: reward and sft)


def _requires_errors(spec: RLHFRunSpec, pipeline: list[StageName]) -> list[str]:
    errors = []
    for stage in pipeline:
        kind, section = STAGE_KINDS[stage], spec.section(stage)
        for needed, what in kind.requires:
            if _reward_model_waived(needed, kind, section):
                continue
            if needed not in pipeline and not spec.provided(needed):
                errors.append(
                    f"pipeline: {stage} needs {what}: add '{needed}' to the pipeline or set {needed}.existingOutput"
                )
    return errors


def _reward_model_waived(needed: str, kind: StageKind, section: StageCommon | None) -> bool:
    """PPO needs the reward stage's model unless its own `rewards` list names no rewardModel."""
    return (
        STAGE_KINDS[needed].produces_reward_model
        and kind.reward_model == "unless_sources"
        and section is not None
        and not kind.scores_with_reward_model(section)
    )


def _waived_cel(stage: str, needed: str, kind: StageKind) -> str:
    """The CEL twin of _reward_model_waived."""
    if not (STAGE_KINDS[needed].produces_reward_model and kind.reward_model == "unless_sources"):
        return ""
    return (
        f" || (has(self.{stage}) && has(self.{stage}.rewards) && self.{stage}.rewards.all(r, r.type != 'rewardModel'))"
    )


def _requires_cel_rules() -> list[dict[str, str]]:
    return [
        cel(
            f"!has(self.pipeline) || !('{stage}' in self.pipeline) || '{needed}' in self.pipeline"
            f" || (has(self.{needed}) && has(self.{needed}.existingOutput))" + _waived_cel(stage, needed, kind),
            f"{stage} needs {what}: add '{needed}' to the pipeline or set {needed}.existingOutput",
            ".pipeline",
        )
        for stage, kind in STAGE_KINDS.items()
        for needed, what in kind.requires
    ]


# ---- reward sources of type rewardModel need the reward stage's model


def _reward_source_errors(spec: RLHFRunSpec, pipeline: list[StageName]) -> list[str]:
    """A rewardModel source needs the reward stage's model: in the pipeline, or existingOutput."""
    if "reward" in pipeline or spec.provided("reward"):
        return []
    errors = []
    for stage in REWARD_SOURCE_STAGES:
        section = spec.section(stage)
        if stage not in pipeline or section is None or section.existing_output is not None:
            continue
        fix = "add 'reward' to the pipeline or set reward.existingOutput"
        if "rewards" not in section.model_fields_set:
            errors.append(f"{stage}.rewards: the default source is the reward stage's model: {fix}, or list rewards")
            continue
        for index, source in enumerate(section.reward_sources()):
            if source.type == "rewardModel":
                errors.append(f"{stage}.rewards[{index}].type: rewardModel needs the reward stage's model: {fix}")
    return errors


def _reward_source_cel(stage: StageName) -> dict[str, str]:
    return cel(
        f"!has(self.pipeline) || !('{stage}' in self.pipeline) || !has(self.{stage})"
        f" || has(self.{stage}.existingOutput) || 'reward' in self.pipeline"
        " || (has(self.reward) && has(self.reward.existingOutput))"
        f" || (has(self.{stage}.rewards) && self.{stage}.rewards.all(r, r.type != 'rewardModel'))",
        f"{stage}.rewards uses the reward stage's model (type rewardModel, the default): "
        "add 'reward' to the pipeline or set reward.existingOutput",
        f".{stage}",
    )


# ---- sharding: 8-bit weights cannot be sharded; fsdpOffload needs fsdp


def shards_8bit(strategy: Strategy, quantization_mode: str) -> bool:
    """8-bit (LLM.int8) weights cannot be sharded by FSDP: the spec's rule and the trainer file's."""
    return strategy == "fsdp" and quantization_mode == "8bit"


def offloads_without_fsdp(strategy: Strategy, offload: bool) -> bool:
    """fsdpOffload moves FSDP shards to the CPU: without fsdp there are none."""
    return offload and strategy != "fsdp"


def stage_strategy(spec: RLHFRunSpec, stage: StageName) -> tuple[Strategy, bool]:
    """(strategy, fsdpOffload) of a stage: its placement's, else the run's, else (ddp, false)."""
    section = spec.section(stage)
    own = section.placement if section is not None else None
    strategy = (own.strategy if own is not None else None) or spec.placement.strategy or "ddp"
    own_offload = own.fsdp_offload if own is not None else None
    offload = own_offload if own_offload is not None else bool(spec.placement.fsdp_offload)
    return strategy, offload


def _placement_field(spec: RLHFRunSpec, stage: StageName, name: str) -> str:
    """The path of the placement field that decided a stage's value (its own, else the run's)."""
    section = spec.section(stage)
    own = section.placement if section is not None else None
    alias = type(spec.placement).model_fields[name].alias or name
    return f"{stage}.placement.{alias}" if own is not None and name in own.model_fields_set else f"placement.{alias}"


def _sharding_errors(spec: RLHFRunSpec, stage: StageName) -> list[str]:
    section = spec.section(stage)
    if section is None or section.existing_output is not None:
        return []
    strategy, offload = stage_strategy(spec, stage)
    errors = []
    if shards_8bit(strategy, section.quantization.mode):
        errors.append(
            f"{stage}.quantization.mode: 8bit weights cannot be sharded ({_placement_field(spec, stage, 'strategy')} "
            "is fsdp): use 4bit-nf4 or none with fsdp, or strategy ddp with 8bit"
        )
    if offloads_without_fsdp(strategy, offload):
        errors.append(
            f"{_placement_field(spec, stage, 'fsdp_offload')}: needs strategy fsdp ({stage} runs with {strategy})"
        )
    return errors


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
            cel(
                f"!({runs} && {eight_bit} && {strategy} == 'fsdp')",
                f"{stage}.quantization.mode: 8bit weights cannot be sharded under strategy fsdp",
                f".{stage}",
            )
        )
        rules.append(
            cel(
                f"!({runs} && {offload} && {strategy} != 'fsdp')",
                f"{stage}: fsdpOffload needs strategy fsdp",
                f".{stage}",
            )
        )
    return rules


# ---- rlaif (issue 11): it has no model to reuse; its pairs are the next stage's data


def follows_rlaif(spec: RLHFRunSpec, stage: StageName) -> bool:
    """The stage trains on the pairs of the rlaif stage right before it (pipelines allow no gap)."""
    return stage in AFTER_RLAIF and "rlaif" in spec.pipeline and stage in spec.pipeline


def _rest_rlaif_errors(spec: RLHFRunSpec) -> list[str]:
    errors: list[str] = []
    for stage, kind in STAGE_KINDS.items():
        section = spec.section(stage)
        if not kind.produces_model and section is not None and section.existing_output is not None:
            errors.append(
                f"{stage}.existingOutput: {stage} writes preference pairs, not a model; to reuse pairs, give their "
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
        cel(
            f"!has(self.{stage}) || !has(self.{stage}.existingOutput)",
            f"{stage} writes preference pairs, not a model: it has no existingOutput",
            f".{stage}",
        )
        for stage, kind in STAGE_KINDS.items()
        if not kind.produces_model
    ]
    for stage in STAGES:
        follows = (
            f"({in_pipeline.format(stage='rlaif')} && '{stage}' in self.pipeline)" if stage in AFTER_RLAIF else "false"
        )
        rules.append(
            cel(
                f"!has(self.{stage}) || !has(self.{stage}.dataset) || self.{stage}.dataset.source != '{RLAIF_SOURCE}'"
                f" || {follows}",
                f"{stage}.dataset.source '{RLAIF_SOURCE}' names the pairs of an rlaif stage, "
                f"but '{stage}' does not follow rlaif in the pipeline",
                f".{stage}",
            )
        )
        if stage in AFTER_RLAIF:
            rules.append(
                cel(
                    f"!{follows} || !has(self.{stage}) || !has(self.{stage}.dataset)"
                    f" || self.{stage}.dataset.source == '{RLAIF_SOURCE}'",
                    f"{stage} follows rlaif and trains on its pairs: omit {stage}.dataset "
                    f"or set its source to '{RLAIF_SOURCE}'",
                    f".{stage}",
                )
            )
    return rules
