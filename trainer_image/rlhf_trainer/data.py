"""Stage data: load a DatasetConfig and normalize it to the columns the trainers expect.

Sources: `builtin:arithmetic`, a local file (.json, .jsonl, .csv, .parquet), or a hub dataset.
`fields` renames the trainer's names to the dataset's ({question: title}); a missing column is
a StageError naming `dataset.fields.<name>`.

Output columns per stage kind's data (rlhf_api.stages.kind.StageKind.data):
- demonstrations (sft): `text`, or `prompt`/`completion`, or `messages` (chat)
- preference (reward, dpo): `prompt`/`chosen`/`rejected` (a non-policy stage, the reward model,
  also accepts chosen/rejected alone)
- prompts: a list of prompt strings (`load_prompts`, ppo), or `prompt` and the dataset's other
  columns, e.g. ground truth (`load_prompt_rows`, grpo, rloo, rest, rlaif)
"""

from __future__ import annotations

import math
import os
import string
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any, TypeAlias

from datasets import Dataset, IterableDataset, load_dataset
from rlhf_api.stage_config import DatasetConfig
from rlhf_api.stages import kind_of

from . import builtin_sources
from .errors import StageError

AnyDataset: TypeAlias = Dataset | IterableDataset

_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
# How many rows a streamed dataset without an eval split gives up for evaluation.
_STREAMING_EVAL_ROWS = 100
# The contract's default dataset template (the prompt part is the text before {answer}).
DEFAULT_TEMPLATE: str = DatasetConfig.model_fields["template"].default


@dataclass
class StageData:
    train: AnyDataset
    eval: AnyDataset | None
    format: str


# ----------------------------------------------------------------------------- raw loading


def _is_local(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or os.path.splitext(source)[1] in _FILE_BUILDERS


def _load_file(path: str, field: str) -> Dataset:
    path = os.path.expanduser(path)
    ext = os.path.splitext(path)[1].lower()
    builder = _FILE_BUILDERS.get(ext)
    if builder is None:
        raise StageError(field, f"'{path}': unsupported file type '{ext}' (use .json, .jsonl, .csv or .parquet)")
    if not os.path.isfile(path):
        raise StageError(field, f"file '{path}' does not exist")
    try:
        return load_dataset(builder, data_files=path, split="train")
    except Exception as exc:
        raise StageError(field, f"cannot read '{path}': {str(exc).splitlines()[0]}") from exc


def _load_hub(dataset: DatasetConfig, split: str, field: str) -> AnyDataset:
    try:
        return load_dataset(
            dataset.source,
            name=dataset.config_name,
            data_dir=dataset.data_dir,
            split=split,
            streaming=dataset.streaming,
        )
    except Exception as exc:
        raise StageError(field, f"cannot load '{dataset.source}' split '{split}': {str(exc).splitlines()[0]}") from exc


def _load_raw(dataset: DatasetConfig, seed: int) -> tuple[AnyDataset, AnyDataset | None]:
    """(train, eval or None) before renames: eval from evalSplit, else evalFraction held out."""
    if _is_local(dataset.source):
        train: AnyDataset = _load_file(dataset.source, "dataset.source")
        evals: AnyDataset | None = _load_file(dataset.eval_split, "dataset.evalSplit") if dataset.eval_split else None
    else:
        train = _load_hub(dataset, dataset.split, "dataset.source")
        evals = _load_hub(dataset, dataset.eval_split, "dataset.evalSplit") if dataset.eval_split else None
    if evals is None and dataset.eval_fraction > 0:
        if isinstance(train, IterableDataset):
            evals, train = train.take(_STREAMING_EVAL_ROWS), train.skip(_STREAMING_EVAL_ROWS)
        elif len(train) >= 2:
            parts = train.train_test_split(test_size=dataset.eval_fraction, seed=seed)
            train, evals = parts["train"], parts["test"]
    if dataset.max_samples is not None:
        if isinstance(train, IterableDataset):
            train = train.take(dataset.max_samples)
        else:
            train = train.shuffle(seed=seed).select(range(min(dataset.max_samples, len(train))))
    return train, evals


def _columns(ds: AnyDataset) -> list[str]:
    names = ds.column_names
    if names is None:  # some streamed datasets only know their columns after a peek
        names = list(next(iter(ds)).keys())
    return list(names)


def _rename(ds: AnyDataset, fields: Mapping[str, str]) -> AnyDataset:
    """Rename dataset columns to the trainer's names; a mapped column must exist."""
    columns = _columns(ds)
    renames = {}
    for name, column in fields.items():
        if column not in columns:
            raise StageError(
                f"dataset.fields.{name}",
                f"column '{column}' not in dataset (columns: {', '.join(columns)})",
            )
        if column != name:
            renames[column] = name
    if not renames:
        return ds
    clashing = [n for n in renames.values() if n in columns and n not in renames]
    if clashing:
        ds = ds.remove_columns(clashing)
    return ds.rename_columns(renames)


def _require(ds: AnyDataset, names: Iterable[str], fmt: str) -> None:
    columns = _columns(ds)
    for name in names:
        if name not in columns:
            raise StageError(
                f"dataset.fields.{name}",
                f"format '{fmt}' needs a '{name}' column, not in dataset "
                f"(columns: {', '.join(columns)}); map one with dataset.fields.{name}",
            )


# ----------------------------------------------------------------------------- formats


def template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def split_template(template: str) -> tuple[str, str]:
    """('Question: {question}\\n\\nAnswer: ', '{answer}'): the prompt part and the rest."""
    if "{answer}" not in template:
        return template, ""
    head, tail = template.split("{answer}", 1)
    return head, "{answer}" + tail


def _resolve_format(dataset: DatasetConfig, stage: str, columns: list[str]) -> str:
    if dataset.format != "auto":
        return dataset.format
    has = set(columns)
    data = kind_of(stage).data
    if data == "demonstrations":
        if "messages" in has:
            return "chat"
        if {"prompt", "completion"} <= has:
            return "prompt_completion"
        if "text" in has:
            return "text"
        if set(template_fields(dataset.template)) <= has:
            return "template"
    elif data == "preference":
        if {"chosen", "rejected"} <= has:
            return "preference"
        if "answers" in has or "upvotes" in has:
            return "votes"
    raise StageError(
        "dataset.format",
        f"cannot tell the format of a {stage} dataset with columns ({', '.join(columns)}); "
        "set dataset.format or map columns with dataset.fields",
        kind="config",
    )


def _format_template(ds: AnyDataset, template: str) -> AnyDataset:
    names = template_fields(template)
    _require(ds, names, "template")
    head, tail = split_template(template)
    columns = _columns(ds)

    def fmt(row: dict[str, Any]) -> dict[str, str]:
        values = {n: "" if row[n] is None else str(row[n]) for n in names}
        if not tail:
            return {"text": head.format(**values)}
        return {"prompt": head.format(**values), "completion": tail.format(**values)}

    return ds.map(fmt, remove_columns=columns)


def _format_preference(ds: AnyDataset, dataset: DatasetConfig, stage: str) -> AnyDataset:
    _require(ds, ["chosen", "rejected"], "preference")
    columns = _columns(ds)
    if "prompt" not in columns:
        if "question" in columns:
            head, _ = split_template(dataset.template)
            names = [n for n in template_fields(head)]
            _require(ds, names, "preference")
            ds = ds.map(lambda row: {"prompt": head.format(**{n: str(row[n]) for n in names})})
        elif kind_of(stage).is_policy:  # a policy learns answers to prompts; a reward model scores whole texts
            _require(ds, ["prompt"], "preference")
    keep = [c for c in ("prompt", "chosen", "rejected") if c in _columns(ds)]
    return ds.select_columns(keep)


def format_for_stage(ds: AnyDataset, dataset: DatasetConfig, stage: str) -> tuple[AnyDataset, str]:
    """Renamed rows -> the stage's trainer columns; returns (dataset, resolved format)."""
    ds = _rename(ds, dataset.fields)
    fmt = _resolve_format(dataset, stage, _columns(ds))
    data = kind_of(stage).data
    if data == "demonstrations":
        if fmt == "text":
            _require(ds, ["text"], fmt)
            return ds.select_columns(["text"]), fmt
        if fmt == "prompt_completion":
            _require(ds, ["prompt", "completion"], fmt)
            return ds.select_columns(["prompt", "completion"]), fmt
        if fmt == "chat":
            _require(ds, ["messages"], fmt)
            return ds.select_columns(["messages"]), fmt
        if fmt == "template":
            return _format_template(ds, dataset.template), fmt
    elif data == "preference":
        if fmt == "preference":
            return _format_preference(ds, dataset, stage), fmt
        if fmt == "votes":
            if not isinstance(ds, Dataset):
                raise StageError("dataset.streaming", "the votes format needs the whole dataset (streaming: false)")
            columns = _columns(ds)
            _require(ds, ["question", "answers"] if "answers" in columns else ["question", "answer", "upvotes"], fmt)
            pairs = votes_to_pairs(ds, dataset.template)
            if not pairs:
                raise StageError("dataset.source", "the votes data yields no preference pairs")
            return Dataset.from_list(pairs), fmt
    raise StageError("dataset.format", f"format '{fmt}' cannot be used by the {stage} stage", kind="config")


# ----------------------------------------------------------------------------- builtin task


def _builtin_data(builtin: builtin_sources.BuiltinDataset, dataset: DatasetConfig, stage: str, seed: int) -> StageData:
    head, _ = split_template(dataset.template)
    if "{question}" not in head:
        raise StageError("dataset.template", f"{builtin.name} needs {{question}} before {{answer}}", kind="config")
    data = kind_of(stage).data
    if data == "demonstrations":
        train = Dataset.from_list(builtin.sft_rows(seed))
        evals = Dataset.from_list(builtin.eval_rows())
        if dataset.max_samples is not None:
            train = train.select(range(min(dataset.max_samples, len(train))))
        plain = dataset.model_copy(update={"fields": {}, "format": "template"})
        train, fmt = format_for_stage(train, plain, stage)
        evals, _ = format_for_stage(evals, plain, stage)
        return StageData(train, evals, fmt)
    if data == "preference":
        rows = builtin.preference_rows(seed, dataset.template, "train", stage=stage)
        if dataset.max_samples is not None:
            rows = rows[: dataset.max_samples]
        evals = Dataset.from_list(builtin.preference_rows(seed, dataset.template, "eval", stage=stage))
        return StageData(Dataset.from_list(rows), evals, "preference")
    raise StageError("stage", f"{builtin.name} has no {stage} training data (use load_prompts)")


def load_stage_data(dataset: DatasetConfig, stage: str, work_dir: str, seed: int) -> StageData:
    """The stage's train and eval datasets in trainer columns (see the module docstring)."""
    builtin = builtin_sources.dataset(dataset.source)
    if builtin is not None:
        return _builtin_data(builtin, dataset, stage, seed)
    if builtin_sources.is_builtin(dataset.source):
        raise StageError(
            "dataset.source",
            f"unknown builtin dataset '{dataset.source}' (available: {builtin_sources.dataset_names()})",
            kind="config",
        )
    train, evals = _load_raw(dataset, seed)
    train, fmt = format_for_stage(train, dataset, stage)
    if evals is not None:
        evals, _ = format_for_stage(evals, dataset, stage)
    return StageData(train, evals, fmt)


def load_prompts(dataset: DatasetConfig, work_dir: str, seed: int) -> list[str]:
    """PPO prompts: the `prompt` column, or `question` formatted by the template's prompt part."""
    return [str(row["prompt"]) for row in load_prompt_rows(dataset, work_dir, seed)]


def load_prompt_rows(dataset: DatasetConfig, work_dir: str, seed: int) -> AnyDataset:
    """Prompts to sample from (PPO, GRPO, RLOO), with every other column kept (renamed by
    `fields`) so that reward functions can read ground truth such as `answer`.

    The prompt is the `prompt` column, or the template's prompt part formatted from the row.
    builtin:arithmetic gives prompt, question and answer (the right sum) for its training
    questions, shuffled by the seed.
    """
    head, _ = split_template(dataset.template)
    builtin = builtin_sources.dataset(dataset.source)
    if builtin is not None:
        prompt_of = builtin.prompt_formatter(dataset.template)
        questions = builtin.prompt_questions(seed)
        if dataset.max_samples is not None:
            questions = questions[: dataset.max_samples]
        rows = [{"prompt": prompt_of(q), "question": q, "answer": builtin.correct_answer(q)} for q in questions]
        return Dataset.from_list(rows)
    if builtin_sources.is_builtin(dataset.source):
        raise StageError("dataset.source", f"unknown builtin dataset '{dataset.source}'", kind="config")
    train, _ = _load_raw(dataset.model_copy(update={"eval_fraction": 0.0}), seed)
    train = _rename(train, dataset.fields)
    columns = _columns(train)
    if "prompt" in columns:
        return train
    names = template_fields(head)
    if names and set(names) <= set(columns):
        return train.map(lambda row: {"prompt": head.format(**{n: str(row[n]) for n in names})})
    _require(train, ["prompt"], "prompts")
    return train  # unreachable: _require raised


@dataclass
class PromptRows:
    """load_prompt_rows in memory: the prompts and the other columns, row-aligned (e.g. `answer`,
    the ground truth that reward sources and label-agreement checks read). ReST and RLAIF."""

    prompts: list[str]
    columns: dict[str, list[Any]]


def prompt_rows(dataset: DatasetConfig, work_dir: str, seed: int) -> PromptRows:
    rows = list(load_prompt_rows(dataset, work_dir, seed))
    names = [c for c in (rows[0] if rows else {}) if c != "prompt"]
    return PromptRows([str(r["prompt"]) for r in rows], {c: [r[c] for r in rows] for c in names})


def dataset_columns(ds: AnyDataset) -> list[str]:
    """Column names, also of a streamed dataset that only knows them after a peek."""
    return _columns(ds)


@dataclass(frozen=True)
class HeldOutPrompt:
    prompt: str
    reference: str | None  # the dataset's answer, when it has one (shown beside the generations)
    question: str | None = None  # builtin task: the question, for checking the exact answer


# Columns that hold a reference answer, in order of preference.
_REFERENCE_COLUMNS = ("answer", "completion", "chosen")


def load_heldout_prompts(dataset: DatasetConfig, work_dir: str, seed: int, limit: int) -> list[HeldOutPrompt]:
    """At most `limit` prompts never trained on: builtin held-out questions, or the eval split
    (evalSplit, else the evalFraction held out with the same seed as in training)."""
    head, _ = split_template(dataset.template)
    builtin = builtin_sources.dataset(dataset.source)
    if builtin is not None:
        prompt_of = builtin.prompt_formatter(dataset.template)
        rows = builtin.eval_rows()[:limit]
        return [HeldOutPrompt(prompt_of(r["question"]), r["answer"], r["question"]) for r in rows]
    _, evals = _load_raw(dataset, seed)
    if evals is None:
        raise StageError(
            "dataset.evalSplit", "the comparison needs held-out prompts: set dataset.evalSplit or evalFraction > 0"
        )
    evals = _rename(evals, dataset.fields)
    columns = _columns(evals)
    names = template_fields(head)
    if "prompt" not in columns and not (names and set(names) <= set(columns)):
        _require(evals, ["prompt"], "held-out prompts")
    reference = next((c for c in _REFERENCE_COLUMNS if c in columns), None)
    found: list[HeldOutPrompt] = []
    for row in evals:
        if len(found) >= limit:
            break
        prompt = str(row["prompt"]) if "prompt" in columns else head.format(**{n: str(row[n]) for n in names})
        found.append(HeldOutPrompt(prompt, str(row[reference]) if reference else None))
    return found


# ----------------------------------------------------------------------------- votes -> pairs


def stack_exchange_score(upvotes: int, accepted: bool) -> int:
    """The StackExchange preference score of one answer.

    Reading of the rule (as in the StackExchange preferences data used for StackLLaMA):
    an answer with a negative vote count scores -1, whether accepted or not; otherwise
    score = round(log2(1 + upvotes)), plus 1 when the asker accepted it. Rounding is to the
    nearest integer, halves up (log2 of an integer + 1 is never exactly a half for upvotes
    > 0, so the tie rule does not matter in practice).
    """
    if upvotes < 0:
        return -1
    return math.floor(math.log2(1 + upvotes) + 0.5) + (1 if accepted else 0)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "y")
    return bool(value)


def votes_to_pairs(
    rows: Iterable[Mapping[str, Any]],
    template: str = DEFAULT_TEMPLATE,
    max_pairs_per_question: int | None = None,
) -> list[dict[str, str]]:
    """Question/answers-with-votes rows -> prompt/chosen/rejected pairs.

    Rows are either one answer each (columns question, answer, upvotes, optional accepted)
    or one question each with an `answers` list of {text, upvotes, accepted}. Every pair of
    answers to the same question with different scores gives one pair; the higher score is
    chosen. Pairs come out in input order (answers compared in the order they appear).
    """
    answers: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for row in rows:
        question = str(row["question"])
        if "answers" in row and row["answers"] is not None:
            for entry in row["answers"]:
                answers[question].append(
                    (
                        str(entry["text"]),
                        stack_exchange_score(int(entry["upvotes"]), _as_bool(entry.get("accepted", False))),
                    )
                )
        else:
            answers[question].append(
                (
                    str(row["answer"]),
                    stack_exchange_score(int(row["upvotes"]), _as_bool(row.get("accepted", False))),
                )
            )
    head, _ = split_template(template)
    pairs = []
    for question, scored in answers.items():
        prompt = head.format(question=question) if "{question}" in head else question
        made = 0
        for (text_a, score_a), (text_b, score_b) in combinations(scored, 2):
            if score_a == score_b:
                continue
            if max_pairs_per_question is not None and made >= max_pairs_per_question:
                break
            chosen, rejected = (text_a, text_b) if score_a > score_b else (text_b, text_a)
            pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
            made += 1
    return pairs
