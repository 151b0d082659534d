"""`builtin:` names: models and datasets generated at run time (nothing is downloaded).

Core modules (data loading, model loading, evaluation, the comparison, reward sources) ask this
registry what a `builtin:` name is; they never import a fixture. The fixtures register
themselves when imported, and the one list of them is `_PROVIDERS` (imported on the first
lookup): today the quickstart's task and tiny model, `rlhf_trainer.builtin_task`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

PREFIX = "builtin:"

# The modules that register builtin models and datasets (imported once, on the first lookup).
_PROVIDERS = ("rlhf_trainer.builtin_task",)


@dataclass(frozen=True)
class BuiltinDataset:
    """A generated task: what data loading, evaluation, the comparison and reward checks ask of it.

    Rows are question/answer dicts; preference rows prompt/chosen/rejected."""

    name: str
    sft_rows: Callable[[int], list[dict[str, str]]]  # seed -> training rows (question, answer)
    eval_rows: Callable[[], list[dict[str, str]]]  # held-out rows with the right answers
    preference_rows: Callable[..., list[dict[str, str]]]  # (seed, template, split, stage=) -> pairs
    prompt_questions: Callable[[int], list[str]]  # seed -> training questions to sample from
    prompt_formatter: Callable[[str], Callable[[str], str]]  # template -> question -> prompt
    correct_answer: Callable[[str], str | None]
    is_correct: Callable[[str, str], bool]  # (question, generated) -> exactly right


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    materialize: Callable[[str], str]  # work_dir -> the model's directory (built once, cached)


_DATASETS: dict[str, BuiltinDataset] = {}
_MODELS: dict[str, BuiltinModel] = {}
_loaded = False


def register_dataset(dataset: BuiltinDataset) -> None:
    _DATASETS[dataset.name] = dataset


def register_model(model: BuiltinModel) -> None:
    _MODELS[model.name] = model


def _load_providers() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _PROVIDERS:
            importlib.import_module(module)


def is_builtin(name: str) -> bool:
    """A `builtin:` name, registered or not."""
    return name.startswith(PREFIX)


def dataset(source: str) -> BuiltinDataset | None:
    """The registered builtin dataset named `source`, or None."""
    if not is_builtin(source):
        return None
    _load_providers()
    return _DATASETS.get(source)


def model(name: str) -> BuiltinModel | None:
    """The registered builtin model named `name`, or None."""
    if not is_builtin(name):
        return None
    _load_providers()
    return _MODELS.get(name)


def dataset_names() -> str:
    _load_providers()
    return ", ".join(_DATASETS)


def model_names() -> str:
    _load_providers()
    return ", ".join(_MODELS)
