"""Run identity (issue 16, item 2): the operator acts only on jobs this run's uid controls.

`kubectl delete rlhfrun demo --cascade=orphan` then re-apply `demo`, or `kubectl replace --force`
while the old jobs are still held by their finalizer: the new run (same name, new uid) must
neither take the old job's Master pod as its result nor count the old job as its failed attempt.
Job names stay deterministic (no uid in them): a foreign job of the run's name stalls the stage
(Stalled=True, JobConflict, a Warning naming the job) until it is gone; one already being deleted
is released at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import NAMESPACE, Cluster, OperatorThread, base_run, wait_for
from .emulator import PYTORCHJOBS

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


def uid(cluster: Cluster, name: str) -> str:
    return str(cluster.run(name)["metadata"]["uid"])


def controller_uid(cluster: Cluster, job: str) -> str | None:
    meta = cluster.kmock.objects[PYTORCHJOBS, NAMESPACE, job].raw["metadata"]
    return next((r["uid"] for r in meta.get("ownerReferences") or [] if r.get("controller")), None)


def condition(cluster: Cluster, name: str, kind: str) -> dict[str, Any]:
    return next((c for c in cluster.status(name).get("conditions", []) if c["type"] == kind), {})


def stalled_condition(cluster: Cluster, name: str) -> dict[str, Any] | None:
    found = condition(cluster, name, "Stalled")
    return found if found.get("status") == "True" else None


def warnings(cluster: Cluster) -> list[str]:
    return [e["message"] for e in cluster.kmock.live("v1/events", NAMESPACE) if e.get("type") == "Warning"]


async def start_then_stop_at_first_job(cluster: Cluster, name: str = "demo") -> str:
    """A run whose sft-1 exists; the operator is stopped afterwards. Returns the old uid."""
    url = str(cluster.kmock.url).rstrip("/")
    first = await asyncio.to_thread(OperatorThread(url).start)
    await cluster.apply(base_run(name))
    await wait_for(lambda: cluster.stage(name, "sft").get("jobName") == f"{name}-sft-1", what="sft-1 recorded")
    await asyncio.to_thread(first.stop)
    return uid(cluster, name)


async def orphan_jobs(cluster: Cluster) -> None:
    """What the garbage collector does for `--cascade=orphan`: the dependents lose their ownerReferences."""
    for job in cluster.job_names():
        path = f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs/{job}"
        await cluster._call("PATCH", path, {"metadata": {"ownerReferences": None}}, "application/merge-patch+json")


async def test_orphaned_old_job_is_not_adopted(cluster: Cluster) -> None:
    old_uid = await start_then_stop_at_first_job(cluster)
    await cluster.finish_stage("demo-sft-1", metrics={"loss": 9.0})  # the OLD run's result
    await cluster.delete_run("demo")
    await orphan_jobs(cluster)
    await cluster.apply(base_run("demo"))
    assert uid(cluster, "demo") != old_uid
    url = str(cluster.kmock.url).rstrip("/")
    operator = await asyncio.to_thread(OperatorThread(url).start)
    try:
        stalled = await wait_for(
            lambda: (
                condition(cluster, "demo", "Stalled").get("status") == "True" and condition(cluster, "demo", "Stalled")
            ),
            what="Stalled",
        )
        assert stalled["reason"] == "JobConflict" and "demo-sft-1" in stalled["message"]
        await wait_for(lambda: any("demo-sft-1" in m for m in warnings(cluster)), what="a Warning naming the job")
        await asyncio.sleep(0.5)  # more passes: still not adopted
        sft = cluster.stage("demo", "sft")
        assert sft.get("phase") != "Succeeded" and not sft.get("metrics")
        assert sft.get("attempts", 0) == 0
        assert controller_uid(cluster, "demo-sft-1") is None  # left alone: not ours

        # The user deletes the old job: it is released (held by the old run's finalizer), then
        # the new run creates its own sft-1.
        await cluster.delete_job("demo-sft-1")
        await wait_for(lambda: controller_uid(cluster, "demo-sft-1") == uid(cluster, "demo"), what="a new sft-1")
        await wait_for(lambda: cluster.stage("demo", "sft").get("attempts") == 1, what="sft attempt 1 recorded")
        assert condition(cluster, "demo", "Stalled")["status"] == "False"
    finally:
        await asyncio.to_thread(operator.stop)
    assert operator.error is None


async def test_replace_force_releases_the_old_held_job_and_does_not_count_it(cluster: Cluster) -> None:
    old_uid = await start_then_stop_at_first_job(cluster)
    await cluster.set_job_condition("demo-sft-1", "Running")
    # kubectl replace --force: the old run is deleted, the garbage collector marks its job for
    # deletion (held by the finalizer, ownerReference still the old uid), the new run is created.
    await cluster.delete_run("demo")
    await cluster.delete_job("demo-sft-1")
    await cluster.apply(base_run("demo"))
    url = str(cluster.kmock.url).rstrip("/")
    operator = await asyncio.to_thread(OperatorThread(url).start)
    try:
        new_uid = uid(cluster, "demo")
        await wait_for(lambda: controller_uid(cluster, "demo-sft-1") == new_uid, what="the new run's sft-1")
        await wait_for(lambda: cluster.stage("demo", "sft").get("phase") == "Running", what="sft Running")
        sft = cluster.stage("demo", "sft")
        assert sft["attempts"] == 1 and sft["jobName"] == "demo-sft-1"  # the old job was no attempt
        assert cluster.job_names() == ["demo-sft-1"]
        assert old_uid != new_uid
    finally:
        await asyncio.to_thread(operator.stop)
    assert operator.error is None


async def test_running_job_of_a_stale_uid_failing_is_not_this_runs_attempt(cluster: Cluster) -> None:
    await start_then_stop_at_first_job(cluster)
    await cluster.set_job_condition("demo-sft-1", "Running")
    await cluster.delete_run("demo")  # the garbage collector has not got to the job yet
    await cluster.apply(base_run("demo"))
    url = str(cluster.kmock.url).rstrip("/")
    operator = await asyncio.to_thread(OperatorThread(url).start)
    try:
        await wait_for(lambda: condition(cluster, "demo", "Stalled").get("reason") == "JobConflict", what="Stalled")
        await cluster.fail_stage("demo-sft-1", "old run's job failed")
        await asyncio.sleep(0.5)
        sft = cluster.stage("demo", "sft")
        assert sft.get("attempts", 0) == 0 and sft.get("phase") == "Pending"
        assert cluster.job_names() == ["demo-sft-1"]  # no sft-2 for a failure that was not ours
    finally:
        await asyncio.to_thread(operator.stop)
    assert operator.error is None


async def test_stale_job_deleted_later_is_released_and_replaced_not_counted(cluster: Cluster) -> None:
    """The garbage collector reaches the old run's job only after the new run was seen."""
    old_uid = await start_then_stop_at_first_job(cluster)
    await cluster.set_job_condition("demo-sft-1", "Running")
    await cluster.delete_run("demo")
    await cluster.apply(base_run("demo"))
    url = str(cluster.kmock.url).rstrip("/")
    operator = await asyncio.to_thread(OperatorThread(url).start)
    try:
        await wait_for(lambda: condition(cluster, "demo", "Stalled").get("reason") == "JobConflict", what="Stalled")
        assert controller_uid(cluster, "demo-sft-1") == old_uid
        await cluster.delete_job("demo-sft-1")  # the garbage collector, late
        new_uid = uid(cluster, "demo")
        await wait_for(lambda: controller_uid(cluster, "demo-sft-1") == new_uid, what="the new run's sft-1")
        await wait_for(lambda: cluster.stage("demo", "sft").get("attempts") == 1, what="attempt 1 recorded")
        sft = cluster.stage("demo", "sft")
        assert sft["phase"] == "Running" and sft["jobName"] == "demo-sft-1"
        assert cluster.job_names() == ["demo-sft-1"]  # no sft-2: the old job was no attempt of this run
    finally:
        await asyncio.to_thread(operator.stop)
    assert operator.error is None
