"""Whatever a stage prints, the progress reader returns usable events and moves on (issue 23, items
4 and 5): hostile lines leave the status valid and moving, a burst larger than one read cannot
pin the reader, and a stage that makes progress is never taken for hung.

The reader runs as the operator runs it (ProgressReader.read_due) against a log served as the
kubelet serves it (kubelet_log.py); the status it leads to is checked against the CRD's status
schema with int64 bounds (status_schema.py).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rlhf_api import progress
from rlhf_api.progress_status import fold
from rlhf_api.status import RLHFRunStatus, StageProgress, StageStatus
from rlhf_api.validation import parse_run
from rlhf_operator.controller.log_reader import LIMIT_BYTES, ProgressReader
from rlhf_operator.launchers import launcher_of
from rlhf_operator.log_window import take
from rlhf_operator.observed_job import ObservedJob
from rlhf_operator.reconcile import dump_status
from rlhf_operator.reconcile.progress import follow

from .conftest import base_run
from .kubelet_log import FakeLogClient, KubeletLog
from .status_schema import status_errors

JOB = "demo-sft-1"
KIB = 1024

HOSTILE: dict[str, str] = {
    "step NaN": '@@rlhf {"stage":"sft","step":NaN,"max_steps":100}',
    "max_steps Infinity": '@@rlhf {"stage":"sft","step":4,"max_steps":Infinity}',
    "step 10**400": '@@rlhf {"stage":"sft","step":1' + "0" * 400 + "}",
    "step 1e308": '@@rlhf {"stage":"sft","step":1e308,"max_steps":100}',
    "step 10**30": '@@rlhf {"stage":"sft","step":1' + "0" * 30 + ',"max_steps":100}',
    "a list for the stage": '@@rlhf {"stage":["sft"],"step":5,"max_steps":100,"loss":1.5}',
    "a list for the step": '@@rlhf {"stage":"sft","step":[5],"max_steps":100}',
    "a loss of 10**400": '@@rlhf {"stage":"sft","step":5,"max_steps":100,"loss":1' + "0" * 400 + "}",
    "300 KiB in one line": '@@rlhf {"stage":"sft","step":5,"pad":"' + "x" * 300 * KIB + '"}',
    "10,000 nesting levels": "@@rlhf " + '{"a":' * 10_000 + "1" + "}" * 10_000,
    "deep in a list": "@@rlhf " + "[" * 10_000 + "]" * 10_000,
    "binary bytes": "@@rlhf \x00\udcff\udcfe{\x00\x01}",
    "not an object": "@@rlhf 12",
    "a digit string beyond Python's limit": '@@rlhf {"stage":"sft","step":' + "9" * 5000 + "}",
}


def running(total: int | None = None) -> tuple[RLHFRunStatus, dict[str, ObservedJob]]:
    progress_ = StageProgress(step=0, total_steps=total) if total else None
    stage = StageStatus(name="sft", phase="Running", job_name=JOB, attempts=1, progress=progress_)
    return RLHFRunStatus(phase="Running", stages=[stage]), {JOB: ObservedJob(name=JOB, state="Running")}


def read_once(reader: ProgressReader, status: RLHFRunStatus, jobs: dict[str, ObservedJob]) -> Any:
    launcher = launcher_of(base_run("demo"))
    readings, _ = asyncio.run(reader.read_due("team", status, jobs, launcher))
    return readings[JOB]


def event(step: int, total: int = 100, **fields: Any) -> str:
    return progress.MARKER + json.dumps({"stage": "sft", "step": step, "max_steps": total, **fields})


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_line_is_dropped_and_said_and_the_lines_after_it_are_read(name: str) -> None:
    log = KubeletLog()
    start = datetime.now(UTC) - timedelta(seconds=30)
    log.print(event(2), start)
    log.print(HOSTILE[name], start + timedelta(seconds=1))
    log.print(event(3, loss=1.25), start + timedelta(seconds=2))
    reader = ProgressReader(FakeLogClient(log), interval=1)  # type: ignore[arg-type]
    status, jobs = running()

    reading = read_once(reader, status, jobs)  # old code: ValueError, OverflowError, TypeError, RecursionError

    steps = [progress.step_of(e.event) for e in reading.events]
    assert steps[0] == (2, 100) and steps[-1] == (3, 100), steps  # the line after it is not lost
    stage = status.stages[0]
    stage.progress = fold(stage.progress, reading.events)
    assert stage.progress is not None and stage.progress.step == 3 and stage.progress.metrics == {"loss": 1.25}
    assert status_errors(dump_status(status)) == []
    assert reading.complete and reading.dropped, reading  # and what was dropped is said
    # said once per job, not on every pass
    log.print(HOSTILE[name], start + timedelta(seconds=3))
    reader.clock = lambda: 1e9  # the interval is up
    assert read_once(reader, status, jobs).dropped == ()


def test_a_step_above_its_total_is_clamped_and_flagged() -> None:
    log = KubeletLog()
    start = datetime.now(UTC) - timedelta(seconds=30)
    log.print(event(50), start)
    log.print(event(500), start + timedelta(seconds=10))
    status, jobs = running()
    reading = read_once(ProgressReader(FakeLogClient(log), interval=1), status, jobs)  # type: ignore[arg-type]
    stage = status.stages[0]
    stage.progress = fold(stage.progress, reading.events)
    assert stage.progress is not None
    assert (stage.progress.step, stage.progress.total_steps, stage.progress.percent) == (100, 100, 100.0)
    assert reading.dropped == ("step 500 above the total 100 (shown as 100)",)
    assert status_errors(dump_status(status)) == []


@pytest.mark.parametrize(
    ("step", "total", "after"),
    [
        (2**63 - 1, None, 2**63 - 1),  # the largest step int64 holds: kept
        (2**63 - 1, 2**63 - 1, 2**63 - 1),
        (9 * 10**18, 10, 10),
    ],
)
def test_the_largest_steps_give_a_valid_status(step: int, total: int | None, after: int) -> None:
    """A step near int64's top: the speed is finite, the ETA is none rather than past year 9999."""
    start = datetime.now(UTC) - timedelta(seconds=30)
    log = KubeletLog()
    fields = {"stage": "sft", "step": 1} | ({"max_steps": total} if total else {})
    log.print(progress.MARKER + json.dumps(fields), start)
    log.print(progress.MARKER + json.dumps(fields | {"step": step}), start + timedelta(microseconds=1))
    status, jobs = running()
    reading = read_once(ProgressReader(FakeLogClient(log), interval=1), status, jobs)  # type: ignore[arg-type]
    stage = status.stages[0]
    stage.progress = fold(stage.progress, reading.events)
    assert stage.progress is not None and stage.progress.step == after
    assert status_errors(dump_status(status)) == []


@pytest.mark.parametrize("burst_kib", [280, 2000])
def test_a_burst_larger_than_one_read_does_not_pin_the_reader_nor_fake_a_hang(burst_kib: int) -> None:
    """The issue's case: a line every 0.5 s, progressDeadlineSeconds 3, and 280 KiB printed
    within one second (a traceback, a verbose library). Old code: the reader read the same
    256 KiB of that second on every pass, the status stayed at step 6 while the trainer went on,
    and the stage was ended as StageStalled. 2000 KiB: more than the newer reads take, so part
    of it is skipped, and said."""
    body = base_run("demo")
    body["spec"]["sft"]["progressDeadlineSeconds"] = 3
    run = parse_run(body)
    section = run.spec.section("sft")
    log = KubeletLog()
    clock = [0.0]
    reader = ProgressReader(FakeLogClient(log), interval=1, clock=lambda: clock[0])  # type: ignore[arg-type]
    status, jobs = running(total=1000)
    stage = status.stages[0]
    start = datetime(2026, 12, 8, 0, 0, 0, tzinfo=UTC)
    said: list[str] = []
    for tick in range(40):  # 20 s of training, read once a second
        now = start + timedelta(seconds=tick * 0.5)
        trainer_step = tick + 1
        log.print(event(trainer_step, 1000), now)
        if tick == 6:  # within one second, after step 7: lines of 1 KiB
            for i in range(burst_kib):
                log.print("W" * 1000, now + timedelta(microseconds=1000 + i))
        if tick % 2:
            clock[0] = tick * 0.5 + 0.25
            readings, _ = asyncio.run(reader.read_due("team", status, jobs, launcher_of(base_run("demo"))))
            said += readings[JOB].dropped
            verdict = follow(status, stage, jobs[JOB], readings[JOB], section, now, 1, lambda *_: None)
            assert verdict is None, f"at step {trainer_step}: {verdict}"
            assert stage.progress is not None and stage.progress.step == trainer_step, (tick, stage.progress)
    # each pass reached the log's end; the burst was skipped in part, and said
    reads = len(log.reads)
    assert reads <= 20 + 4, reads  # one read per pass, a few more around the burst
    if burst_kib < 500:
        assert said == []  # read whole: the newer read overlaps the first
    else:
        assert said and all("skipped: a burst larger than one read of 256 KiB" in d for d in said), said
    assert all(int(r["limitBytes"]) == LIMIT_BYTES for r in log.reads)


@pytest.mark.parametrize(
    "stamp",
    [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999+14:00",
        "1969-12-31T23:59:59Z",
        "2026-13-01T00:00:00Z",
        "2026-01-01T00:00:00.1234567890Z",
        "\x00" * 40,
        "",
    ],
)
def test_a_line_whose_stamp_is_not_one_is_skipped(stamp: str) -> None:
    """The kubelet writes the stamps, but the reader takes no bytes on trust."""
    good = "2026-01-01T00:00:01.000000001Z " + event(3)
    taken = take(f"{stamp} {event(1)}\n{good}\n", None, full=False)
    assert [progress.step_of(e.event) for e in taken.events] == [(3, 100)]


def test_a_defect_in_reading_leaves_the_pass_going() -> None:
    """Whatever goes wrong in a read (here: the client itself), the pass gets an incomplete
    reading (no hang concluded), never an exception that would stop the run's passes."""

    class Broken(FakeLogClient):
        async def get_text(self, path: str, params: Any) -> str:
            raise RecursionError("deep")

    status, jobs = running()
    reading = read_once(ProgressReader(Broken(KubeletLog()), interval=1), status, jobs)  # type: ignore[arg-type]
    assert reading.complete is False and reading.events == ()
