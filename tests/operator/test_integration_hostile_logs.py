"""The operator as it runs, reading a Master pod log full of hostile lines (issue 23, items 4 and
5): every status it writes is one a real API server takes (status_schema.py), the stage's
progress follows the trainer, the hang deadline of a stage that makes progress never trips, and
what was dropped is said in one Warning.

The log is served as the kubelet serves it (kubelet_log.py: RFC3339Nano stamps, whole-second
sinceTime, tailLines, limitBytes cutting mid-line).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from .conftest import NAMESPACE, Cluster, OperatorThread, base_run, wait_for
from .kubelet_log import KubeletLog
from .status_schema import status_errors
from .test_hostile_progress import HOSTILE
from .test_integration_progress import TEXT, events, live_operator, running_master

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]
__all__ = ["live_operator"]  # the fixture, shared with test_integration_progress


def step_line(step: int, total: int = 1000) -> str:
    return "@@rlhf " + json.dumps({"stage": "sft", "step": step, "max_steps": total, "loss": 1.0})


async def test_hostile_lines_leave_the_status_valid_and_moving(cluster: Cluster, live_operator: OperatorThread) -> None:
    log = KubeletLog()
    cluster.kmock[f"get /api/v1/namespaces/{NAMESPACE}/pods/demo-sft-1-master-0/log"] << TEXT << log.serve
    run = base_run("demo")
    run["spec"]["sft"].update(progressDeadlineSeconds=3, startupProgressDeadlineSeconds=30)
    await cluster.apply(run)
    await running_master(cluster, "demo-sft-1")
    seen: list[dict[str, Any]] = []

    def check() -> None:
        status = cluster.status("demo")
        if not seen or seen[-1] != status:
            seen.append(status)
            assert status_errors(status) == [], status_errors(status)

    step = 0
    lines = [*HOSTILE.values(), "B" * 1000, step_line(500, 100)]  # then a burst, a step above its total
    for hostile in lines:
        step += 1
        log.print(step_line(step))
        if hostile.startswith("B"):  # 300 KiB within one second: a traceback, a verbose library
            for _ in range(300):
                log.print(hostile)
        else:
            log.print(hostile)
        await asyncio.sleep(0.25)  # a progress line every 0.25 s, progressDeadlineSeconds 3
        check()
    step += 1
    log.print(step_line(step))

    def at_last_step() -> bool:
        check()
        return (cluster.stage("demo", "sft").get("progress") or {}).get("step") == step

    await wait_for(at_last_step, what=f"step {step}")
    sft = cluster.stage("demo", "sft")
    assert sft["phase"] == "Running" and sft["attempts"] == 1 and cluster.job_names() == ["demo-sft-1"]
    assert not events(cluster, "StageStalled")
    dropped = await wait_for(lambda: events(cluster, "ProgressLinesDropped"), what="ProgressLinesDropped")
    assert len(dropped) == 1 and dropped[0]["type"] == "Warning", dropped
    assert "stage sft (job demo-sft-1): dropped from its progress: step NaN" in dropped[0]["message"]
    assert len(seen) > 5  # the status moved along
