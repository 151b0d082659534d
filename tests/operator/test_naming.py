"""naming: deterministic child names within Kubernetes' limits, labels that fit."""

from __future__ import annotations

import re

import pytest
from rlhf_api.naming import (
    ATTEMPT_LABEL,
    MANAGED_BY_LABEL,
    MAX_JOB_NAME_LENGTH,
    RUN_LABEL,
    STAGE_LABEL,
    child_name,
    configmap_name,
    job_name,
    label_value,
    labels,
    pvc_name,
    selector,
)

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
STAGES = ("sft", "reward", "ppo", "dpo")


def _long_name(length: int, tail: str = "") -> str:
    """A valid DNS-1123 subdomain of exactly `length` characters (dots included)."""
    body = ("abcdefghij." * 30)[: length - len(tail) - 1] + "x" + tail
    assert len(body) == length
    return body


def _all_names(run: str) -> list[str]:
    names = [pvc_name(run)]
    for stage in STAGES:
        names.append(configmap_name(run, stage))
        names.extend(job_name(run, stage, attempt) for attempt in (1, 2, 3, 21))
    return names


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ("quickstart", ["quickstart-data", "quickstart-sft-config", "quickstart-sft-1", "quickstart-ppo-3"]),
        ("llama-7b", ["llama-7b-data", "llama-7b-sft-config", "llama-7b-sft-1", "llama-7b-ppo-3"]),
    ],
)
def test_short_names_are_readable(run: str, expected: list[str]) -> None:
    got = [pvc_name(run), configmap_name(run, "sft"), job_name(run, "sft", 1), job_name(run, "ppo", 3)]
    assert got == expected


@pytest.mark.parametrize(
    "run",
    [
        _long_name(253),
        _long_name(253, tail="z"),
        "a" * 63,
        "a" * 64,
        "my.run.v2",
        "7b-run",
        "0",
        "a-" * 30 + "b",
        "x" * 50 + "." + "y" * 40,
    ],
)
def test_names_fit_and_are_deterministic(run: str) -> None:
    names = _all_names(run)
    for name in names:
        assert len(name) <= 63, name
        assert DNS1035.match(name), name
    for stage in STAGES:
        for attempt in (1, 2, 3, 21):
            assert len(job_name(run, stage, attempt)) <= MAX_JOB_NAME_LENGTH
    assert len(set(names)) == len(names), "names of one run must be distinct"
    assert names == _all_names(run), "names must be deterministic"


def test_long_names_keep_stage_and_attempt_readable() -> None:
    run = _long_name(253)
    name = job_name(run, "reward", 2)
    assert name.endswith("-reward-2")
    assert name.startswith("abcdefghij")


def test_runs_differing_only_late_get_different_names() -> None:
    first, second = _long_name(253, tail="a"), _long_name(253, tail="b")
    assert first[:-1] == second[:-1]
    assert set(_all_names(first)).isdisjoint(_all_names(second))


def test_sanitized_names_do_not_collide() -> None:
    # Dots are not allowed in child names: "a.b" must not become the same name as "a-b".
    assert pvc_name("a.b") != pvc_name("a-b")
    assert job_name("a.b", "sft", 1) != job_name("a-b", "sft", 1)
    assert pvc_name("a-b") == "a-b-data"


def test_names_start_with_a_letter() -> None:
    for name in _all_names("1run"):
        assert name[0].isalpha(), name


def test_child_name_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="run name"):
        child_name("")
    with pytest.raises(ValueError, match="attempt"):
        job_name("run", "sft", 0)
    with pytest.raises(ValueError, match="too long"):
        child_name("run", "p" * 70)


@pytest.mark.parametrize("run", ["quickstart", "a" * 63, "a" * 64, _long_name(253), "x.y-z"])
def test_labels_are_valid_label_values(run: str) -> None:
    got = labels(run, "ppo", 3)
    assert got[MANAGED_BY_LABEL] == "rlhf-operator"
    assert got[STAGE_LABEL] == "ppo"
    assert got[ATTEMPT_LABEL] == "3"
    for value in got.values():
        assert len(value) <= 63 and LABEL_VALUE.match(value), value
    if len(run) <= 63:
        assert got[RUN_LABEL] == run
    assert labels(run) == {MANAGED_BY_LABEL: "rlhf-operator", RUN_LABEL: got[RUN_LABEL]}


def test_long_run_label_values_stay_distinct() -> None:
    first, second = _long_name(253, tail="a"), _long_name(253, tail="b")
    assert label_value(first) != label_value(second)
    assert label_value(first) == label_value(first)


def test_selector_matches_labels() -> None:
    assert selector("run", "sft") == ("app.kubernetes.io/managed-by=rlhf-operator,rlhf.dev/run=run,rlhf.dev/stage=sft")
