"""Checked handover: before a stage trains, it verifies what it was handed.

- Each earlier stage of this run that produced an input (`cfg.inputs`, filled by the plan):
  its result.json exists, says succeeded, and its steps reached its plannedSteps. An exit code
  of 0 is no proof: a trainer resumed from a stale checkpoint can exit 0 having trained nothing.
- Each model the stage loads (model, rewardModel, reward.baseModel), however it was provided:
  a local directory is a loadable model, not a LoRA adapter directory (adapter_config.json and
  no config.json) mistaken for a merged model; its tokenizer has the special tokens the stage needs.

A failed check is a config error (exit code 2) naming the config field of the input. The
decisions are pure functions, tested table-driven; `check_inputs` only reads files.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path

from rlhf_api.layout import result_path
from rlhf_api.model_config import ModelConfig
from rlhf_api.result import StageResult, read_result
from rlhf_api.stages import kind_of
from rlhf_api.trainer_job import StageInput, TrainerJobConfig

from .errors import StageError

# A requirement: any one of these tokenizer attributes, and what the stage needs it for.
Requirement = tuple[tuple[str, ...], str]

# load_tokenizer pads with eos, else unk, when a tokenizer has no pad token.
PADDING: Requirement = (("pad_token", "eos_token", "unk_token"), "to pad batches")
END_OF_TEXT: Requirement = (
    ("eos_token",),
    "to end each completion (training appends it, generation stops on it)",
)
# The reward stage appends an end token to every scored text; encoders use their separator.
END_OF_SCORED_TEXT: Requirement = (("eos_token", "sep_token", "pad_token"), "to end each scored text")

_POLICY = (PADDING, END_OF_TEXT)
# The reward model scores the policy's decoded text (PPO, and rewardModel sources): it only pads.
_SCORER = (PADDING,)
# The reward stage trains a classifier on whole texts, each ended by an end token.
_CLASSIFIER = (PADDING, END_OF_SCORED_TEXT)


def models_used(cfg: TrainerJobConfig) -> list[tuple[str, ModelConfig]]:
    """(config field, model) for every model the stage loads, the one it trains first."""
    base_model = cfg.section.own_base_model()
    used = [(f"{cfg.stage}.baseModel", base_model)] if base_model else [("model", cfg.model)]
    if cfg.reward_model is not None:
        used.append(("rewardModel", cfg.reward_model))
    return used


def token_needs(stage: str, field: str) -> tuple[Requirement, ...]:
    """What the tokenizer of the model in a stage's config field must have."""
    if field == "rewardModel":
        return _SCORER
    return _CLASSIFIER if kind_of(stage).produces_reward_model else _POLICY


def result_problem(result: StageResult | None, stage_input: StageInput) -> str | None:
    """Why an earlier stage's result does not hand over a finished model, or None."""
    where = result_path(stage_input.output_dir)
    name = f"input stage '{stage_input.stage}'"
    if result is None:
        return f"{name} has no readable result ({where}): it has not finished"
    if result.stage != stage_input.stage:
        return f"{name}: {where} is the result of stage '{result.stage}'"
    if result.status != "succeeded":
        why = f": {result.message}" if result.message else ""
        return f"{name} did not succeed: {where} says {result.status}{why}"
    if result.steps is None or result.planned_steps is None:
        return f"{name}: {where} does not record steps and plannedSteps, so its training cannot be confirmed"
    if result.steps < result.planned_steps:
        return f"{name} trained {result.steps} of its {result.planned_steps} planned steps ({where})"
    return None


def model_dir_problem(files: Collection[str]) -> str | None:
    """Why a local model directory holding `files` is not a merged model, or None."""
    if "config.json" not in files and "adapter_config.json" in files:
        return (
            "is a LoRA adapter directory (adapter_config.json, no config.json), not a merged model: "
            "use the merged model (a stage writes it next to its adapter, in merged/)"
        )
    return None


def token_problem(needs: tuple[Requirement, ...], present: Mapping[str, object]) -> str | None:
    """The first requirement that none of the tokenizer's special tokens (`present`) meets."""
    for alternatives, purpose in needs:
        if not any(present.get(name) is not None for name in alternatives):
            names = " or ".join(a.removesuffix("_token") for a in alternatives)
            return f"the tokenizer has no {names} token, needed {purpose}"
    return None


def check_inputs(cfg: TrainerJobConfig) -> None:
    """Raise StageError(kind="config") naming the first input that cannot be handed over."""
    for stage_input in cfg.inputs:
        problem = result_problem(read_result(result_path(stage_input.output_dir)), stage_input)
        if problem:
            field = "dataset.source" if stage_input.role == "dataset" else f"{stage_input.role}.name"
            raise StageError(field, problem, kind="config")
    for field, model in models_used(cfg):
        _check_model(cfg, field, model)


def _check_model(cfg: TrainerJobConfig, field: str, model: ModelConfig) -> None:
    path = Path(os.path.expanduser(model.name))
    if path.is_dir():
        problem = model_dir_problem(os.listdir(path))
        if problem:
            raise StageError(f"{field}.name", f"'{model.name}' {problem}", kind="config")
    from .modeling import load_saved_tokenizer  # transformers: only once the config checks passed

    tokenizer = load_saved_tokenizer(model, cfg.work_dir, field)
    needs = token_needs(cfg.stage, field)
    present = {name: getattr(tokenizer, name, None) for alternatives, _ in needs for name in alternatives}
    problem = token_problem(needs, present)
    if problem:
        raise StageError(f"{field}.name", f"'{model.name}': {problem}", kind="config")
