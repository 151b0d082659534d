"""The stage-outcome finalizer lives only while needed (issue 16, item 6): it is released as
soon as the job's outcome is in the run's status, not kept for the job's life, so a finished job
never holds up a namespace deletion with the operator gone (uninstalled, or in that namespace)."""

from __future__ import annotations

import pytest
from rlhf_api.naming import STAGE_JOB_FINALIZER

from .conftest import NAMESPACE, Cluster, OperatorThread, base_run, wait_for
from .emulator import PYTORCHJOBS

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


def held(cluster: Cluster, job: str) -> bool:
    meta = cluster.kmock.objects[PYTORCHJOBS, NAMESPACE, job].raw["metadata"]
    return STAGE_JOB_FINALIZER in (meta.get("finalizers") or [])


async def test_finalizer_released_once_the_outcome_is_recorded(cluster: Cluster, operator: OperatorThread) -> None:
    await cluster.apply(base_run("demo"))
    await wait_for(lambda: "demo-sft-1" in cluster.job_names(), what="sft-1")
    assert held(cluster, "demo-sft-1")  # running: its outcome is not recorded yet
    await cluster.fail_stage("demo-sft-1", "OOMKilled")
    await wait_for(lambda: "demo-sft-2" in cluster.job_names(), what="sft-2")
    await wait_for(lambda: not held(cluster, "demo-sft-1"), what="failed attempt released")
    assert held(cluster, "demo-sft-2")
    await cluster.finish_stage("demo-sft-2")
    await wait_for(lambda: cluster.stage("demo", "sft").get("phase") == "Succeeded", what="sft Succeeded")
    await wait_for(lambda: not held(cluster, "demo-sft-2"), what="succeeded attempt released")
    assert cluster.stage("demo", "sft")["metrics"] == {"loss": 0.5}  # recorded before the release
    for stage in ("reward", "ppo"):
        await wait_for(lambda s=stage: f"demo-{s}-1" in cluster.job_names(), what=f"{stage}-1")
        await cluster.finish_stage(f"demo-{stage}-1")
    await wait_for(lambda: cluster.status("demo").get("phase") == "Succeeded", what="run Succeeded")
    await wait_for(
        lambda: not any(held(cluster, job) for job in cluster.job_names()), what="no finished job keeps a finalizer"
    )
