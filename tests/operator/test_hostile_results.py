"""Whatever a Master pod's termination message holds, the stage's outcome is recorded in a status
a real API server takes (issue 23, items 2 and 7): integers beyond int64 are dropped and said, a
result that says it failed is a failed attempt even when the pod exited 0.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from rlhf_api.result import StageResult
from rlhf_operator.observed_job import ObservedJob
from rlhf_operator.pod_result import parse_result

from .conftest import base_run
from .status_schema import status_errors
from .test_reconcile import body_of, event_reasons, stage_of, step

OUT = "/workspace/demo/sft"
GOOD = {"stage": "sft", "status": "succeeded", "outputPath": OUT, "metrics": {"loss": 0.5}}
BIG = 100000000000000000000  # 10**20: beyond int64


def message(**fields: Any) -> str:
    return json.dumps(GOOD | fields)


@pytest.mark.parametrize(
    ("text", "dropped"),
    [
        (message(resumedFromStep=BIG), "resumedFromStep"),
        (message(steps=BIG, plannedSteps=BIG), "steps"),
        (message(plannedSteps=2**63), "plannedSteps"),
        (message(exitCode=BIG), "exitCode"),
        (message(metrics={"loss": 0.5, "reward": 10**400}), "metric reward"),
        (message(steps="many"), "steps"),
        (message(merged_path=["x"]), "merged_path"),
    ],
    ids=["resumedFromStep", "steps", "plannedSteps 2**63", "exitCode", "metric 10**400", "steps text", "a list path"],
)
def test_result_fields_beyond_what_the_status_holds_are_dropped_and_the_status_is_valid(
    text: str, dropped: str
) -> None:
    result, error = parse_result(text)
    assert result is not None and error is not None and dropped in error, (result, error)
    _, body = step(body_of(base_run("demo")))
    job = ObservedJob(name="demo-sft-1", state="Succeeded", result=result, result_error=error)
    outcome, after = step(body, {job.name: job})
    sft = stage_of(after, "sft")
    assert sft["phase"] == "Succeeded" and sft["metrics"] == {"loss": 0.5}
    assert status_errors(after["status"]) == []  # old code: resumedFromStep 10**20 (int64 refused)
    assert ("Warning", "StageResultUnreadable") in event_reasons(outcome)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[1, 2]",
        "{" * 10_000 + "}" * 10_000,
        '{"stage": "sft"}',
        json.dumps(GOOD | {"stage": ["sft"]}),
        "\x00\ufffd" * 3000,
        json.dumps(GOOD)[:-1],
    ],
    ids=["empty", "text", "list", "deep", "no status", "stage list", "binary", "cut"],
)
def test_no_result_in_a_message_is_said_never_raised(text: str) -> None:
    result, error = parse_result(text)  # old code: RecursionError on deep nesting
    assert result is None and error


def test_a_result_of_int64_top_is_kept() -> None:
    result, error = parse_result(message(steps=2**63 - 1, resumedFromStep=2**63 - 1))
    assert result is not None and error is None and result.steps == 2**63 - 1


def test_a_result_that_says_failed_is_a_failed_attempt_even_with_exit_0() -> None:
    """Old code: recorded Succeeded, without a warning, and the next stage started."""
    _, body = step(body_of(base_run("demo")))
    failed = StageResult.model_validate(GOOD | {"status": "failed", "message": "reward model NaN", "exitCode": 1})
    job = ObservedJob(name="demo-sft-1", state="Succeeded", result=failed)
    outcome, after = step(body, {job.name: job})
    sft = stage_of(after, "sft")
    assert (sft["phase"], sft["attempts"], sft["jobName"]) == ("Running", 2, "demo-sft-2"), sft  # retryBackoff 0
    assert (
        (sft["message"])
        == "attempt 1 failed: job demo-sft-1 succeeded, but its result says the stage failed: reward model NaN"
    )
    assert ("Warning", "StageRetrying") in event_reasons(outcome)
    assert "demo-reward-1" not in [getattr(a, "name", None) for a in outcome.actions]
    # a configuration error is not retried, as for a pod that exited 2
    config_error = failed.model_copy(update={"exit_code": 2})
    job = ObservedJob(name="demo-sft-1", state="Succeeded", result=config_error)
    _, after = step(body, {job.name: job})
    assert stage_of(after, "sft")["phase"] == "Failed"
