"""Reward sources: what scores a stage's sampled responses (GRPO, RLOO, and stages that reuse them).

A stage lists one or more sources, each with a weight; the trainer sums the weighted scores.
Each source is exactly one of:
- `rewardModel`: the reward stage's merged model (the plan wires its path into the trainer
  config as `rewardModel`; with no reward stage, `reward.existingOutput` provides it);
- `model`: any one-output sequence classifier, by hub id or path on the volume;
- `builtin`: a verifiable reward computed from the response, no model:
  `arithmetic` checks the exact sum of the quickstart task's "What is a + b?" questions, and
  `exactMatch` compares the response with a dataset column (e.g. `answer`) after normalisation;
- `function`: a Python function `module:function` that the trainer provides. The operator never
  imports or runs it. Ship it in a derived trainer image (installed, or on the image's
  PYTHONPATH), or as a module on the run's volume named by `pythonPath` (added to the trainer's
  import path); `rlhf run` also honours the PYTHONPATH it is started with. It is called like a
  TRL reward function: `fn(prompts=[...], completions=[...], **dataset_columns)`, returning one
  float (or None: no verdict) per completion;
- `remote`: a scorer behind HTTP (e.g. `rlhf serve-reward` serving the reward stage's model as
  a Deployment), called with the JSON protocol documented in `rlhf_api.served`.

Torch-free (the operator validates and plans these); the trainer builds them in
`rlhf_trainer.reward_sources`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from .camel_model import CamelModel, field_errors
from .model_config import ModelConfig
from .served import RemoteReward, url_label

RewardSourceType = Literal["rewardModel", "model", "builtin", "function", "remote"]
BuiltinReward = Literal["arithmetic", "exactMatch"]
AnswerExtraction = Literal["firstLine", "full", "lastNumber"]

FUNCTION_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
LABEL = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
DEFAULT_COLUMN = "answer"
MAX_SOURCES = 8

# The member a type needs has the type's name (rewardModel needs none); every other member must
# be unset (the Kubernetes one-of idiom).
_MEMBERS = ("model", "builtin", "function", "remote")
# Options that only mean something for one builtin.
_EXACT_MATCH_ONLY = ("column", "extract")


class RewardSource(CamelModel):
    """One reward signal and its weight. Set `type` and the member it names (model, builtin, function or remote)."""

    type: RewardSourceType = Field(
        description=(
            "rewardModel: the reward stage's model (or reward.existingOutput). model: a sequence classifier "
            "given in `model`. builtin: the verifiable reward named in `builtin`. function: the Python "
            "function named in `function`, provided by the trainer image. remote: the HTTP scorer in `remote`."
        )
    )
    weight: float = Field(
        default=1.0,
        ge=-1000.0,
        le=1000.0,
        description="Multiplies this source's score before the scores are summed (0 logs it without training on it).",
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=LABEL,
        description=(
            "Label in metrics (rewards/<name>/mean). Default: reward_model, the model's last path part, "
            "the builtin's name, or the function's name."
        ),
    )
    model: ModelConfig | None = Field(
        default=None, description="type model: a one-output sequence classifier (hub id or path on the volume)."
    )
    builtin: BuiltinReward | None = Field(
        default=None,
        description=(
            "type builtin: arithmetic (1 when the response's first line is the exact sum asked by a "
            "'What is a + b?' prompt, else 0) or exactMatch (1 when the response equals the dataset "
            "column `column` after normalisation: case, surrounding spaces and punctuation, "
            "thousands separators, equal numbers; else 0)."
        ),
    )
    column: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description=f"builtin exactMatch: the dataset column holding the right answer. Default: {DEFAULT_COLUMN}.",
    )
    extract: AnswerExtraction | None = Field(
        default=None,
        description=(
            "builtin exactMatch: which part of the response is the answer. firstLine (default): up to the "
            "first line break; full: all of it; lastNumber: the last number in it (for reasoning "
            "before the answer)."
        ),
    )
    function: str | None = Field(
        default=None,
        max_length=256,
        pattern=FUNCTION_PATH,
        description=(
            "type function: import path module:function of a reward function in the trainer image "
            "(or on PYTHONPATH), called as fn(prompts=..., completions=..., **dataset_columns) and "
            "returning one float (or None) per completion. The operator never imports it."
        ),
    )

    remote: RemoteReward | None = Field(
        default=None,
        description="type remote: a scorer behind HTTP (e.g. rlhf serve-reward) and how to call it.",
    )

    python_path: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description=(
            "type function: a directory holding the function's module, put first on the trainer's import "
            "path; relative to the volume's mount path (e.g. code -> /workspace/code), or absolute."
        ),
    )

    @model_validator(mode="after")
    def _one_member(self) -> RewardSource:
        errors = source_errors(self)
        if errors:
            raise field_errors(errors)
        return self

    @property
    def default_label(self) -> str:
        if self.type == "rewardModel":
            return "reward_model"
        if self.type == "model" and self.model is not None:
            tail = self.model.name.rstrip("/").rsplit("/", 1)[-1]
            return re.sub(r"[^A-Za-z0-9_.-]", "_", tail) or "model"
        if self.type == "builtin" and self.builtin is not None:
            return "exact_match" if self.builtin == "exactMatch" else self.builtin
        if self.type == "function" and self.function is not None:
            return self.function.rsplit(":", 1)[-1]
        if self.type == "remote" and self.remote is not None:
            return url_label(self.remote.url)
        return self.type


def source_errors(source: RewardSource) -> list[str]:
    """'field: message' lines for a source whose members do not match its type."""
    errors: list[str] = []
    needed = source.type if source.type in _MEMBERS else None
    for member in _MEMBERS:
        present = getattr(source, member) is not None
        if member == needed and not present:
            errors.append(f"{member}: required when type is {source.type}")
        elif member != needed and present:
            errors.append(f"{member}: only allowed when type is {member} (type is {source.type})")
    if not (source.type == "builtin" and source.builtin == "exactMatch"):
        for option in _EXACT_MATCH_ONLY:
            if getattr(source, option) is not None:
                errors.append(f"{option}: only for type builtin with builtin exactMatch")
    if source.python_path is not None and source.type != "function":
        errors.append("pythonPath: only for type function")
    return errors


def source_cel_rules() -> list[dict[str, str]]:
    """The API server's copy of source_errors, attached to every RewardSource in the CRD."""
    rules = []
    for member in _MEMBERS:
        rules.append(
            {
                "rule": f"(self.type == '{member}') == has(self.{member})",
                "message": f"{member} is required when type is {member}, and only then",
            }
        )
    rules.append(
        {
            "rule": "(self.type == 'builtin' && has(self.builtin) && self.builtin == 'exactMatch')"
            " || (!has(self.column) && !has(self.extract))",
            "message": "column and extract are only for type builtin with builtin exactMatch",
        }
    )
    rules.append(
        {"rule": "self.type == 'function' || !has(self.pythonPath)", "message": "pythonPath is only for type function"}
    )
    return rules


def labels(sources: list[RewardSource]) -> list[str]:
    """Metric labels, one per source: `name`, or the default label, made unique with a suffix."""
    out: list[str] = []
    for source in sources:
        label = source.name or source.default_label
        if label in out:
            suffix = 2
            while f"{label}_{suffix}" in out:
                suffix += 1
            label = f"{label}_{suffix}"
        out.append(label)
    return out


def uses_reward_model(sources: list[RewardSource] | None) -> bool:
    """Some source scores with the reward stage's model (the plan must wire one in)."""
    return any(s.type == "rewardModel" for s in sources or [])


def default_sources() -> list[RewardSource]:
    return [RewardSource(type="rewardModel")]


def rewards_field() -> Any:
    """The `rewards` field of a stage section that scores samples."""
    return Field(
        default_factory=default_sources,
        min_length=1,
        max_length=MAX_SOURCES,
        description=(
            "Reward sources, summed with their weights. Default: the reward stage's model ([{type: rewardModel}])."
        ),
    )
