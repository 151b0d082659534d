"""Stage identity (rlhf_api.identity): what changes a stage's config hash and what does not."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from rlhf_api.identity import StageIdentity, canonical_json, changed_fields, config_hash, mismatch
from rlhf_api.validation import parse_run
from rlhf_operator.plan import plan

from .conftest import MINIMAL


def _identities(edit: dict[str, Any] | None = None, uid: str | None = "uid-1") -> dict[str, StageIdentity]:
    document = copy.deepcopy(MINIMAL)
    document["metadata"]["uid"] = uid
    for path, value in (edit or {}).items():
        node = document
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    plans = plan(parse_run(document), "/ws")
    return {p.name: p.config.identity for p in plans if p.config is not None and p.config.identity is not None}


BASE = _identities()

# (case, spec edit, stages whose identity changes): a stage's identity follows its own training
# fields and the stages it loads; placement, retries, metric sinks never matter.
CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("no edit", {}, set()),
    ("sft learning rate", {"spec.sft.training": {"learningRate": 0.001}}, {"sft", "reward", "ppo"}),
    ("sft dataset", {"spec.sft.dataset": {"source": "data/other.jsonl"}}, {"sft", "reward", "ppo"}),
    ("reward max length", {"spec.reward.training": {"maxLength": 128}}, {"reward", "ppo"}),
    ("ppo steps", {"spec.ppo.training": {"steps": 7}}, {"ppo"}),
    ("base model", {"spec.model": {"name": "builtin:tiny-llama", "dtype": "float32"}}, {"sft", "reward", "ppo"}),
    ("run placement", {"spec.placement": {"workers": 1, "gpusPerWorker": 0, "shmSize": "2Gi"}}, set()),
    ("stage placement", {"spec.sft.placement": {"resources": {"requests": {"cpu": "3"}}}}, set()),
    ("retries and backoff", {"spec.sft.retries": 5, "spec.sft.retryBackoffSeconds": 0}, set()),
    ("wandb (a metric sink)", {"spec.secrets": {"wandbApiKey": {"name": "w", "key": "k"}}}, set()),
]


@pytest.mark.parametrize(("edit", "changed"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_identity_follows_what_the_trainer_trains(edit: dict[str, Any], changed: set[str]) -> None:
    after = _identities(edit)
    assert {stage for stage in BASE if after[stage] != BASE[stage]} == changed
    assert all(after[s].run_uid == "uid-1" for s in after)


def test_the_run_uid_is_beside_the_hash_not_in_it() -> None:
    other = _identities(uid="uid-2")
    assert {s: i.config_hash for s, i in other.items()} == {s: i.config_hash for s, i in BASE.items()}
    assert all(other[s] != BASE[s] for s in BASE)


@pytest.mark.parametrize(
    ("config", "reordered"),
    [
        ({"a": 1, "b": {"x": [1, 2], "y": "z"}}, {"b": {"y": "z", "x": [1, 2]}, "a": 1}),
        ({"stage": "sft", "reportTo": ["tensorboard"]}, {"reportTo": ["wandb"], "stage": "sft"}),
        ({"stage": "sft"}, {"stage": "sft", "identity": {"runUid": "u", "configHash": "h"}}),
    ],
)
def test_hash_is_stable_across_key_order_and_unhashed_fields(config: dict[str, Any], reordered: dict[str, Any]) -> None:
    assert config_hash(config) == config_hash(reordered)
    assert config_hash(json.loads(json.dumps(config))) == config_hash(config)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"a": 1}, {"a": 2}),
        ({"a": 1.0}, {"a": 1.5}),
        ({"a": [1, 2]}, {"a": [2, 1]}),  # list order is meaningful
        ({"a": None}, {}),
    ],
)
def test_hash_changes_with_any_value(one: dict[str, Any], other: dict[str, Any]) -> None:
    assert config_hash(one) != config_hash(other)


def test_upstream_hashes_enter_the_hash() -> None:
    assert config_hash({"a": 1}, {"sft": "x"}) != config_hash({"a": 1}, {"sft": "y"})
    assert config_hash({"a": 1}, {"sft": "x", "reward": "y"}) == config_hash({"a": 1}, {"reward": "y", "sft": "x"})


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        canonical_json({"a": float("nan")})


ME = StageIdentity(run_uid="u1", config_hash="aaaa")


@pytest.mark.parametrize(
    ("expected", "found", "words"),
    [
        (ME, ME, None),
        (None, None, None),  # a config from before identities: anything goes (the old behaviour)
        (None, ME, None),
        (ME, None, "carries no identity"),
        (ME, StageIdentity(run_uid="u2", config_hash="aaaa"), "another run (uid u2"),
        (ME, StageIdentity(run_uid="u1", config_hash="bbbb"), "another config of this stage (hash bbbb, now aaaa)"),
    ],
)
def test_mismatch_says_which_part_differs(
    expected: StageIdentity | None, found: StageIdentity | None, words: str | None
) -> None:
    why = mismatch(expected, found)
    assert (why is None) if words is None else (why is not None and words in why)


def test_changed_fields_names_dotted_paths() -> None:
    old = {"sft": {"training": {"learningRate": 0.002, "maxSteps": 4}}, "ppo": {"x": 1}}
    new = {"sft": {"training": {"learningRate": 0.001, "maxSteps": 4}}, "ppo": {"x": 1}, "dpo": {}}
    assert changed_fields(old, new) == ["dpo", "sft.training.learningRate"]
