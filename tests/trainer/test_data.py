"""Data loading: sources, renames, formats, splits, clear errors, and the votes -> pairs builder."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from rlhf_api.stage_config import DatasetConfig
from rlhf_trainer.data import (
    load_heldout_prompts,
    load_prompts,
    load_stage_data,
    split_template,
    stack_exchange_score,
    votes_to_pairs,
)
from rlhf_trainer.errors import StageError


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ----------------------------------------------------------------------------- votes


@pytest.mark.parametrize(
    ("upvotes", "accepted", "score"),
    [
        (0, False, 0),  # log2(1) = 0
        (0, True, 1),
        (1, False, 1),  # log2(2) = 1
        (2, False, 2),  # log2(3) = 1.585 -> 2
        (3, True, 3),  # log2(4) = 2, +1
        (4, False, 2),  # log2(5) = 2.32 -> 2
        (5, False, 3),  # log2(6) = 2.585 -> 3
        (10, True, 4),  # log2(11) = 3.46 -> 3, +1
        (1000, False, 10),  # log2(1001) = 9.97 -> 10
        (-1, False, -1),
        (-7, True, -1),  # negative votes: -1 even when accepted
    ],
)
def test_stack_exchange_score(upvotes: int, accepted: bool, score: int) -> None:
    assert stack_exchange_score(upvotes, accepted) == score
    if upvotes >= 0:  # the rule itself, as an independent check
        assert score == round(math.log2(1 + upvotes)) + int(accepted)


def test_votes_to_pairs_hand_computed() -> None:
    rows = [
        # scores: a=round(log2 4)=2, b=-1, c=round(log2 2)+1=2, d=0
        {"question": "q1", "answer": "a", "upvotes": 3, "accepted": False},
        {"question": "q1", "answer": "b", "upvotes": -2, "accepted": True},
        {"question": "q1", "answer": "c", "upvotes": 1, "accepted": True},
        {"question": "q1", "answer": "d", "upvotes": 0},
        # one answer: no pair
        {"question": "q2", "answer": "e", "upvotes": 9},
    ]
    pairs = votes_to_pairs(rows, template="Q: {question}\nA: {answer}")
    got = [(p["chosen"], p["rejected"]) for p in pairs]
    # a-b, a-c (tie, skipped), a-d, b-c, b-d, c-d
    assert got == [("a", "b"), ("a", "d"), ("c", "b"), ("d", "b"), ("c", "d")]
    assert {p["prompt"] for p in pairs} == {"Q: q1\nA: "}
    assert len(votes_to_pairs(rows, max_pairs_per_question=2)) == 2


def test_votes_nested_answers_and_renames(tmp_path: Path) -> None:
    rows = [
        {
            "title": "How?",
            "answers": [
                {"text": "good", "upvotes": 7, "accepted": True},  # 3 + 1 = 4
                {"text": "meh", "upvotes": 1, "accepted": False},  # 1
                {"text": "bad", "upvotes": -3, "accepted": False},  # -1
            ],
        }
    ]
    source = write_jsonl(tmp_path / "votes.jsonl", rows)
    ds = DatasetConfig(source=source, fields={"question": "title"}, format="votes", eval_fraction=0.0)
    data = load_stage_data(ds, "reward", str(tmp_path), seed=0)
    assert data.train.to_list() == [
        {"prompt": "Question: How?\n\nAnswer: ", "chosen": "good", "rejected": "meh"},
        {"prompt": "Question: How?\n\nAnswer: ", "chosen": "good", "rejected": "bad"},
        {"prompt": "Question: How?\n\nAnswer: ", "chosen": "meh", "rejected": "bad"},
    ]


# ----------------------------------------------------------------------------- formats


def test_template_split() -> None:
    assert split_template("Question: {question}\n\nAnswer: {answer}") == (
        "Question: {question}\n\nAnswer: ",
        "{answer}",
    )
    assert split_template("{text}") == ("{text}", "")


def test_local_file_with_renames_becomes_prompt_completion(tmp_path: Path) -> None:
    rows = [{"q": f"What is {i} + 1?", "a": str(i + 1), "extra": i} for i in range(20)]
    ds = DatasetConfig(
        source=write_jsonl(tmp_path / "d.jsonl", rows),
        fields={"question": "q", "answer": "a"},
        eval_fraction=0.1,
    )
    data = load_stage_data(ds, "sft", str(tmp_path), seed=0)
    assert data.format == "template"
    assert data.eval is not None and len(data.eval) == 2 and len(data.train) == 18
    row = data.train[0]
    assert set(row) == {"prompt", "completion"}
    assert row["prompt"].startswith("Question: What is ") and row["prompt"].endswith("Answer: ")
    assert row["completion"] == str(int(row["prompt"].split("What is ")[1].split(" ")[0]) + 1)


@pytest.mark.parametrize(
    ("rows", "fmt", "columns"),
    [
        ([{"text": "hello"}], "text", {"text"}),
        ([{"prompt": "p", "completion": "c"}], "prompt_completion", {"prompt", "completion"}),
        ([{"messages": [{"role": "user", "content": "hi"}]}], "chat", {"messages"}),
    ],
)
def test_sft_auto_format(tmp_path: Path, rows: list[dict[str, Any]], fmt: str, columns: set[str]) -> None:
    ds = DatasetConfig(source=write_jsonl(tmp_path / "d.jsonl", rows * 4), eval_fraction=0.0)
    data = load_stage_data(ds, "sft", str(tmp_path), seed=0)
    assert data.format == fmt and set(data.train.column_names) == columns and data.eval is None


def test_csv_and_parquet_sources(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"prompt": ["p1", "p2"], "chosen": ["c1", "c2"], "rejected": ["r1", "r2"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ("d.csv", "d.parquet"):
        ds = DatasetConfig(source=str(tmp_path / name), eval_fraction=0.0)
        data = load_stage_data(ds, "dpo", str(tmp_path), seed=0)
        assert data.format == "preference" and data.train.to_list() == frame.to_dict("records")


def test_preference_prompt_from_question_column(tmp_path: Path) -> None:
    rows = [{"question": "Why?", "response_j": "good", "response_k": "bad"}] * 3
    ds = DatasetConfig(
        source=write_jsonl(tmp_path / "se.jsonl", rows),
        fields={"chosen": "response_j", "rejected": "response_k"},
        eval_fraction=0.0,
    )
    data = load_stage_data(ds, "dpo", str(tmp_path), seed=0)
    assert data.train[0] == {"prompt": "Question: Why?\n\nAnswer: ", "chosen": "good", "rejected": "bad"}


def test_eval_split_file_and_max_samples(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}"} for i in range(50)])
    evals = write_jsonl(tmp_path / "eval.jsonl", [{"text": "e"}] * 3)
    ds = DatasetConfig(source=train, eval_split=evals, max_samples=10)
    data = load_stage_data(ds, "sft", str(tmp_path), seed=0)
    assert len(data.train) == 10 and data.eval is not None and len(data.eval) == 3


def test_builtin_splits_per_stage(tmp_path: Path) -> None:
    ds = DatasetConfig(source="builtin:arithmetic")
    sft = load_stage_data(ds, "sft", str(tmp_path), seed=0)
    assert sft.format == "template" and set(sft.train.column_names) == {"prompt", "completion"}
    assert sft.eval is not None and len(sft.eval) == 120
    pref = load_stage_data(ds, "dpo", str(tmp_path), seed=0)
    assert set(pref.train.column_names) == {"prompt", "chosen", "rejected"}
    prompts = load_prompts(ds, str(tmp_path), seed=0)
    assert len(prompts) == 600 and all(p.endswith("\n\nAnswer: ") for p in prompts)
    assert load_prompts(ds, str(tmp_path), seed=0) == prompts


def test_load_prompts_from_file(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "p.jsonl", [{"title": "Why?"}, {"title": "How?"}])
    ds = DatasetConfig(source=source, fields={"question": "title"})
    assert load_prompts(ds, str(tmp_path), seed=0) == [
        "Question: Why?\n\nAnswer: ",
        "Question: How?\n\nAnswer: ",
    ]


def test_heldout_prompts_builtin_have_ground_truth(tmp_path: Path) -> None:
    ds = DatasetConfig(source="builtin:arithmetic")
    held = load_heldout_prompts(ds, str(tmp_path), seed=0, limit=500)
    assert len(held) == 120  # every held-out question, never trained on
    assert held[0].prompt == f"Question: {held[0].question}\n\nAnswer: " and held[0].reference
    assert len(load_heldout_prompts(ds, str(tmp_path), seed=0, limit=5)) == 5


def test_heldout_prompts_are_the_eval_split_training_never_saw(tmp_path: Path) -> None:
    rows = [{"title": f"q{i}", "response": f"a{i}"} for i in range(40)]
    ds = DatasetConfig(
        source=write_jsonl(tmp_path / "d.jsonl", rows),
        fields={"question": "title", "answer": "response"},
        eval_fraction=0.1,
    )
    held = load_heldout_prompts(ds, str(tmp_path), seed=3, limit=100)
    trained = load_stage_data(ds, "sft", str(tmp_path), seed=3).train
    assert len(held) == 4 and all(h.question is None for h in held)
    assert {h.prompt for h in held}.isdisjoint(row["prompt"] for row in trained)
    assert all(h.reference == "a" + h.prompt.split("q")[1].split("\n")[0] for h in held)
    with pytest.raises(StageError) as info:
        load_heldout_prompts(ds.model_copy(update={"eval_fraction": 0.0}), str(tmp_path), seed=3, limit=10)
    assert info.value.field == "dataset.evalSplit"


# ----------------------------------------------------------------------------- errors


def _error(ds: DatasetConfig, stage: str, tmp_path: Path) -> StageError:
    with pytest.raises(StageError) as info:
        load_stage_data(ds, stage, str(tmp_path), seed=0)
    return info.value


def test_missing_renamed_column_names_the_field(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", [{"a": "x", "b": "y"}] * 4)
    err = _error(DatasetConfig(source=source, fields={"question": "q", "answer": "b"}), "sft", tmp_path)
    assert err.field == "dataset.fields.question"
    assert str(err) == "dataset.fields.question: column 'q' not in dataset (columns: a, b)"


def test_missing_required_column_names_the_field(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "x", "chosen": "y"}] * 4)
    err = _error(DatasetConfig(source=source, format="preference"), "dpo", tmp_path)
    assert err.field == "dataset.fields.rejected" and "columns: prompt, chosen" in str(err)


def test_absent_file_and_unknown_format(tmp_path: Path) -> None:
    assert _error(DatasetConfig(source=str(tmp_path / "nope.jsonl")), "sft", tmp_path).field == ("dataset.source")
    source = write_jsonl(tmp_path / "d.jsonl", [{"x": 1}] * 4)
    assert _error(DatasetConfig(source=source), "sft", tmp_path).field == "dataset.format"
    assert _error(DatasetConfig(source="builtin:nope"), "sft", tmp_path).field == "dataset.source"
