"""The stage's model cache: one load where a stage asks for the same weights again, and the
premise that keeps every figure exact (a held model is what a second load would give)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from rlhf_api.model_config import ModelConfig
from rlhf_api.rest_config import SamplingConfig
from rlhf_api.stage_config import DatasetConfig, QuantizationConfig
from rlhf_trainer import model_cache
from rlhf_trainer.evaluate import task_accuracy
from rlhf_trainer.modeling import load_causal_lm
from rlhf_trainer.sampling import sample_responses

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    model_cache.release()
    yield
    model_cache.release()


KEY_A = ("a", "none", "cpu", "/w")
KEY_B = ("b", "none", "cpu", "/w")


@pytest.mark.parametrize(
    ("asks", "loads"),
    [
        # (key, keep) in order -> the keys actually loaded
        ([(KEY_A, True), (KEY_A, True), (KEY_A, False)], ["a"]),  # ReST: evaluate, Grow, Improve
        ([(KEY_A, False), (KEY_A, False)], ["a", "a"]),  # taken for training: a fresh load next
        ([(KEY_A, True), (KEY_B, True), (KEY_A, False)], ["a", "b", "a"]),  # one model held at a time
        ([(KEY_A, False), (KEY_A, True), (KEY_A, True)], ["a", "a"]),
    ],
)
def test_loads_only_when_the_weights_are_not_held(asks: list[tuple[Any, bool]], loads: list[str]) -> None:
    loaded: list[str] = []

    def loader(name: str) -> Any:
        def load() -> tuple[Any, Any]:
            loaded.append(name)
            return object(), object()

        return load

    for key, keep in asks:
        model_cache.cached(key, loader(key[0]), keep=keep)
    assert loaded == loads


def test_a_held_model_is_dropped_before_other_weights_load() -> None:
    held: list[bool] = []
    model_cache.cached(KEY_A, lambda: (object(), object()), keep=True)

    def load_b() -> tuple[Any, Any]:
        held.append(model_cache._held is not None)
        return object(), object()

    model_cache.cached(KEY_B, load_b, keep=False)
    assert held == [False] and model_cache._held is None


def _generators() -> tuple[Any, ...]:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].tobytes()


def test_a_model_evaluated_and_sampled_from_is_what_a_fresh_load_gives(work_dir: str) -> None:
    """What the cache relies on: loading draws no random numbers (a later LoRA init or sample is
    unchanged by a load skipped), and evaluation and sampling leave weights, buffers, configs,
    mode and tokenizer as loaded."""
    model, quant = ModelConfig(name="builtin:tiny-llama", dtype="float32"), QuantizationConfig()
    torch.manual_seed(3)
    before = _generators()
    held, tokenizer = model_cache.causal_lm(model, quant, work_dir, keep=True)
    after = _generators()
    assert torch.equal(before[0], after[0]) and before[1:] == after[1:]

    task_accuracy(held, tokenizer, DatasetConfig(source="builtin:arithmetic"), work_dir, 4, limit=8)
    sample_responses(held, tokenizer, ["What is 1 + 2?"] * 2, 3, SamplingConfig(max_new_tokens=3, batch_size=4))
    again, same_tokenizer = model_cache.causal_lm(model, quant, work_dir, keep=False)
    assert again is held and same_tokenizer is tokenizer

    fresh, fresh_tokenizer = load_causal_lm(model, quant, work_dir)
    ours, theirs = held.state_dict(), fresh.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(held.named_buffers(), fresh.named_buffers(), strict=True))
    assert held.config.to_json_string() == fresh.config.to_json_string()
    assert held.generation_config.to_json_string() == fresh.generation_config.to_json_string()
    assert held.training == fresh.training
    assert [p.requires_grad for p in held.parameters()] == [p.requires_grad for p in fresh.parameters()]
    assert (tokenizer.padding_side, tokenizer.truncation_side) == (
        fresh_tokenizer.padding_side,
        fresh_tokenizer.truncation_side,
    )


def test_only_a_held_models_greedy_answers_are_remembered() -> None:
    held, other = object(), object()
    model_cache.cached(KEY_A, lambda: (held, object()), keep=True)
    model_cache.remember_answers(other, ["p"], 8, 64, ["trained"])  # e.g. a model being trained
    assert model_cache.remembered_answers(KEY_A, ["p"], 8, 64) is None
    model_cache.remember_answers(held, ["p", "q"], 8, 64, ["1", "2"])
    assert model_cache.remembered_answers(KEY_A, ["p", "q"], 8, 64) == ["1", "2"]
    # other prompts, budget or batches: other numbers (padding), so nothing to reuse
    assert model_cache.remembered_answers(KEY_A, ["p"], 8, 64) is None
    assert model_cache.remembered_answers(KEY_A, ["p", "q"], 4, 64) is None
    assert model_cache.remembered_answers(KEY_A, ["p", "q"], 8, 32) is None
    assert model_cache.remembered_answers(KEY_B, ["p", "q"], 8, 64) is None


def test_the_comparison_reads_the_answers_task_accuracy_gave_and_they_are_what_it_would_generate(
    work_dir: str,
) -> None:
    """The baseline side of ReST's comparison: its starting policy's task_accuracy answers, reused."""
    from rlhf_trainer import builtin_sources
    from rlhf_trainer.data import load_heldout_prompts
    from rlhf_trainer.model_comparison import _answer

    model, quant = ModelConfig(name="builtin:tiny-llama", dtype="float32"), QuantizationConfig()
    dataset = DatasetConfig(source="builtin:arithmetic")
    held, tokenizer = model_cache.causal_lm(model, quant, work_dir, keep=True)
    task_accuracy(held, tokenizer, dataset, work_dir, 6)  # ReST's task_accuracy_before
    prompts = load_heldout_prompts(dataset, work_dir, 0, 128)
    builtin = builtin_sources.dataset(dataset.source)
    assert builtin is not None
    with pytest.MonkeyPatch.context() as patch:  # no load, no generation: the remembered answers

        def no_load(*args: Any) -> None:
            raise AssertionError("loaded the model again")

        patch.setattr("rlhf_trainer.model_comparison.load_causal_lm", no_load)
        reused = _answer(model, quant, work_dir, "model", prompts, 6, builtin.is_correct)
    key = model_cache.key_of(model, quant, work_dir)
    assert model_cache.remembered_answers(key, [p.prompt for p in prompts], 6, 64) == reused.answers
    model_cache.release()
    model_cache._answers.clear()
    generated = _answer(model, quant, work_dir, "model", prompts, 6, builtin.is_correct)
    assert (reused.answers, reused.lengths, reused.correct) == (generated.answers, generated.lengths, generated.correct)
