"""Reward sources built into reward functions: builtin checks, user functions, classifiers, weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rlhf_api.model_config import ModelConfig
from rlhf_api.reward_sources import RewardSource
from rlhf_trainer.errors import StageError
from rlhf_trainer.reward_sources import build_reward_functions
from rlhf_trainer.reward_sources.verifiable import arithmetic, exact_match, normalize

PROMPT = "Question: What is 27 + 5?\n\nAnswer: "


@pytest.mark.parametrize(
    ("completion", "expected"),
    [("32", 1.0), (" 32\nQuestion", 1.0), ("22", 0.0), ("320", 0.0), ("", 0.0), ([{"content": "32"}], 1.0)],
)
def test_arithmetic_reads_the_question_from_the_prompt(completion: Any, expected: float) -> None:
    assert arithmetic([PROMPT], [completion]) == [expected]


def test_arithmetic_without_a_question_gives_no_verdict() -> None:
    assert arithmetic(["Tell me a joke."], ["no"]) == [None]


@pytest.mark.parametrize(
    ("answer", "truth", "how", "expected"),
    [
        ("Paris.", "paris", "firstLine", 1.0),
        ("  New   York ", "new york", "firstLine", 1.0),
        ("1,000", "1000", "firstLine", 1.0),
        ("2.50", "2.5", "firstLine", 1.0),
        ("42\nbecause", "42", "firstLine", 1.0),
        ("42\nbecause", "42", "full", 0.0),
        ("so 3 + 4 = 7, answer: 7.", "7", "lastNumber", 1.0),
        ("-3", "3", "firstLine", 0.0),
        ("Lyon", "Paris", "firstLine", 0.0),
    ],
)
def test_exact_match_normalises(answer: str, truth: str, how: Any, expected: float) -> None:
    assert exact_match("answer", how)(prompts=["q"], completions=[answer], answer=[truth]) == [expected]


def test_exact_match_skips_samples_without_ground_truth() -> None:
    score = exact_match("answer", "firstLine")
    assert score(prompts=["a", "b"], completions=["x", "x"], answer=[None, ""]) == [None, None]


def test_normalize_keeps_words_and_numbers_apart() -> None:
    assert normalize("007") == "7" and normalize("7.0") == "7" and normalize("Hello, World!") == "hello, world"


def _build(sources: list[dict[str, Any]], **kwargs: Any) -> Any:
    models = [RewardSource.model_validate(s) for s in sources]
    options: dict[str, Any] = {"reward_model": None, "work_dir": "/nonexistent", "columns": ["prompt", "answer"]}
    return build_reward_functions(models, **(options | kwargs))


def test_weighted_total_and_labels() -> None:
    rewards = _build(
        [
            {"type": "builtin", "builtin": "arithmetic"},
            {"type": "builtin", "builtin": "exactMatch", "weight": 0.5},
            {"type": "builtin", "builtin": "exactMatch", "weight": -2.0, "name": "penalty"},
        ]
    )
    assert rewards.labels == ["arithmetic", "exact_match", "penalty"]
    assert rewards.weights == [1.0, 0.5, -2.0]
    totals, each = rewards.score([PROMPT, PROMPT], ["32", "31"], {"answer": ["32", None]})
    assert each == {"arithmetic": [1.0, 0.0], "exact_match": [1.0, None], "penalty": [1.0, None]}
    assert totals == [1.0 + 0.5 - 2.0, 0.0]


def test_missing_column_names_the_source() -> None:
    with pytest.raises(StageError) as caught:
        _build(
            [{"type": "builtin", "builtin": "arithmetic"}, {"type": "builtin", "builtin": "exactMatch", "column": "y"}]
        )
    assert caught.value.field == "rewards[1].column" and "'y' not in the dataset" in caught.value.message


def test_user_function_by_import_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module on PYTHONPATH (e.g. on the volume) provides the function; it gets the columns."""
    (tmp_path / "my_rewards.py").write_text(
        "def brevity(prompts, completions, answer, **kwargs):\n"
        "    return [1.0 / (1 + len(c)) if a else None for c, a in zip(completions, answer)]\n"
        "def wrong_count(prompts, completions, **kwargs):\n"
        "    return [0.0]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rewards = _build([{"type": "function", "function": "my_rewards:brevity"}])
    assert rewards.labels == ["brevity"]
    assert rewards.functions[0](prompts=["p", "p"], completions=["abc", "x"], answer=["1", None]) == [0.25, None]
    short = _build([{"type": "function", "function": "my_rewards:wrong_count"}]).functions[0]
    with pytest.raises(StageError, match="returned 1 scores for 2 completions"):
        short(prompts=["p", "p"], completions=["a", "b"])


def test_user_function_from_a_directory_on_the_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pythonPath: a directory put first on the import path (the plan makes a relative one absolute)."""
    import sys

    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "volume_rewards.py").write_text(
        "def one(prompts, completions, **kw):\n    return [1] * len(completions)\n"
    )
    source = {"type": "function", "function": "volume_rewards:one", "pythonPath": str(tmp_path / "code")}
    rewards = _build([source])
    assert rewards.functions[0](prompts=["p"], completions=["c"]) == [1.0]
    with pytest.raises(StageError) as caught:
        _build([{**source, "pythonPath": str(tmp_path / "absent")}])
    assert caught.value.field == "rewards[0].pythonPath"


@pytest.mark.parametrize(
    ("path", "message"),
    [("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"), ("json:no_such_fn", "has no function")],
)
def test_bad_function_path_names_the_field(path: str, message: str) -> None:
    with pytest.raises(StageError) as caught:
        _build([{"type": "builtin", "builtin": "arithmetic"}, {"type": "function", "function": path}])
    assert caught.value.field == "rewards[1].function" and message in caught.value.message


def test_classifier_scores_prompt_response_and_eos(tmp_path: Path) -> None:
    """The reward stage's model scores exactly what the reward trainer trained on: text + eos."""
    import torch
    from rlhf_trainer.builtin_task.arithmetic import materialize_tiny_llama
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = materialize_tiny_llama(str(tmp_path))
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(path).save_pretrained(tmp_path / "rm")
    rewards = _build([{"type": "rewardModel"}], reward_model=ModelConfig(name=str(tmp_path / "rm")))
    scores = rewards.functions[0](prompts=[PROMPT, PROMPT], completions=["32", "4"])

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "rm")
    model.config.pad_token_id = tokenizer.pad_token_id
    with torch.no_grad():
        texts = [PROMPT + c + "</s>" for c in ("32", "4")]
        expected = [model(**tokenizer(t, return_tensors="pt")).logits[0, 0].item() for t in texts]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert rewards.labels == ["reward_model"]


@pytest.mark.parametrize("labels", [3, None])
def test_only_one_output_classifiers_are_reward_models(tmp_path: Path, labels: int | None) -> None:
    """A several-label classifier, or a causal LM (the SFT output by mistake), is refused by name."""
    from rlhf_trainer.builtin_task.arithmetic import materialize_tiny_llama
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = materialize_tiny_llama(str(tmp_path))
    target = path
    if labels is not None:
        target = str(tmp_path / "clf")
        AutoModelForSequenceClassification.from_pretrained(path, num_labels=labels).save_pretrained(target)
        AutoTokenizer.from_pretrained(path).save_pretrained(target)
    with pytest.raises(StageError) as caught:
        _build([{"type": "model", "model": {"name": target}}])
    assert caught.value.field == "rewards[0].model.name"
    assert "not a one-output sequence classifier" in caught.value.message
