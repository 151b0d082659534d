"""The real kopf operator against kmock's emulator over HTTP; the tests play the training operator.

The emulator enforces what a real API server does (authentication, the chart's RBAC, the CRD's
schema, names, selectors: docs/architecture.md); it has no garbage collector: ownerReferences are
checked on the objects and a test-side one (Emulator.collect_garbage) plays Kubernetes' after
deletions.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from rlhf_api.validation import parse_run
from rlhf_operator.controller import metrics
from rlhf_operator.render import render
from rlhf_operator.settings import OperatorSettings

from .conftest import NAMESPACE, Cluster, OperatorThread, base_run, dpo_run, wait_for
from .emulator import TRAINJOBS

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


def operator_writes(cluster: Cluster) -> Counter[str]:
    """Writes by the operator, ours and kopf's (not the test's: run, job status, pods)."""
    counts: Counter[str] = Counter()
    for verb, plural, sub, _name, agent in cluster.writes():
        if agent != "test":
            counts[f"{verb} {plural}{'/' + sub if sub else ''}"] += 1
    return counts


def events(cluster: Cluster) -> list[dict[str, Any]]:
    return cluster.kmock.live("v1/events", NAMESPACE)


async def run_through(cluster: Cluster, name: str, stages: list[str], resource: str | None = None) -> None:
    kwargs = {"resource": resource} if resource else {}
    for stage in stages:
        job = f"{name}-{stage}-1"
        await wait_for(lambda job=job: job in cluster.job_names(*([resource] if resource else [])), what=f"job {job}")
        await cluster.finish_stage(job, **kwargs)
    await wait_for(lambda: cluster.status(name).get("phase") == "Succeeded", what=f"{name} Succeeded")


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_three_stage_run_succeeds_within_write_budget(cluster: Cluster, operator: OperatorThread) -> None:
    finished_before = sample("rlhf_stage_duration_seconds_count", stage="ppo", outcome="Succeeded")
    await cluster.apply(base_run("demo"))
    await wait_for(lambda: "demo-sft-1" in cluster.job_names(), what="first job")
    assert cluster.kmock.live("v1/persistentvolumeclaims", NAMESPACE)[0]["metadata"]["name"] == "demo-data"
    assert [c["metadata"]["name"] for c in cluster.kmock.live("v1/configmaps", NAMESPACE)] == ["demo-sft-config"]
    await run_through(cluster, "demo", ["sft", "reward", "ppo"])
    await wait_for(lambda: len(events(cluster)) == 4, what="4 events")
    status = cluster.status("demo")
    assert [s["phase"] for s in status["stages"]] == ["Succeeded"] * 3
    assert status["stages"][0]["metrics"] == {"loss": 0.5}
    assert status["stages"][2]["mergedPath"] == "/workspace/demo/ppo/merged"
    assert status["observedGeneration"] == 1
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
    }
    assert cluster.job_names() == ["demo-ppo-1", "demo-reward-1", "demo-sft-1"]
    # The reward job got the SFT output as its model.
    reward_config = next(
        c for c in cluster.kmock.live("v1/configmaps", NAMESPACE) if c["metadata"]["name"] == "demo-reward-config"
    )
    assert "/workspace/demo/sft/merged" in next(iter(reward_config["data"].values()))
    await wait_for(lambda: operator_writes(cluster)["update pytorchjobs"] >= 3, what="the 3 finalizer releases")
    writes = operator_writes(cluster)
    assert writes == {
        "create persistentvolumeclaims": 1,
        "create networkpolicies": 1,
        "create configmaps": 3,
        "create pytorchjobs": 3,
        "update rlhfruns/status": 4,
        "create events": 4,
        "update pytorchjobs": 3,  # each job's finalizer released once its outcome is recorded
    }
    assert sum(writes.values()) <= 20
    # `rlhf render` shows exactly what the operator created (ownerReferences aside: render has no uid).
    applied = parse_run(base_run("demo"))
    applied.metadata.uid = cluster.run("demo")["metadata"]["uid"]  # in the stage identity of each config
    rendered = render(applied, OperatorSettings(metrics_port=0), namespace=NAMESPACE)
    created = [
        *cluster.kmock.live("v1/persistentvolumeclaims", NAMESPACE),
        *cluster.kmock.live("networking.k8s.io/v1/networkpolicies", NAMESPACE),
        *cluster.kmock.live("v1/configmaps", NAMESPACE),
        *cluster.jobs(),
    ]
    assert {(o["kind"], o["metadata"]["name"]) for o in rendered} == {
        (o.get("kind"), o["metadata"]["name"]) for o in created
    }
    by_name = {o["metadata"]["name"]: o for o in created}
    for obj in rendered:
        assert by_name[obj["metadata"]["name"]].get("spec", {}) == obj.get("spec", {}), obj["metadata"]["name"]
        assert by_name[obj["metadata"]["name"]].get("data") == obj.get("data")
    # Prometheus: the run by phase, the finished stages' durations.
    assert sample("rlhf_runs", phase="Succeeded") == 1 and sample("rlhf_runs", phase="Running") == 0
    assert sample("rlhf_stage_duration_seconds_count", stage="ppo", outcome="Succeeded") == finished_before + 1
    assert [e["reason"] for e in sorted(events(cluster), key=lambda e: int(e["metadata"]["resourceVersion"]))] == [
        "StageStarted",
        "StageStarted",
        "StageStarted",
        "Succeeded",
    ]


async def test_dpo_pipeline(cluster: Cluster, operator: OperatorThread) -> None:
    await cluster.apply(dpo_run("dpo-demo"))
    await run_through(cluster, "dpo-demo", ["sft", "dpo"])
    assert [s["name"] for s in cluster.status("dpo-demo")["stages"]] == ["sft", "dpo"]
    assert cluster.job_names() == ["dpo-demo-dpo-1", "dpo-demo-sft-1"]


async def test_trainjob_launcher(cluster: Cluster, operator: OperatorThread) -> None:
    await cluster.apply(base_run("tj", launcher="trainjob", pipeline=["sft", "reward", "ppo"]))
    await run_through(cluster, "tj", ["sft", "reward", "ppo"], resource=TRAINJOBS)
    assert cluster.job_names() == []  # no PyTorchJobs
    assert cluster.status("tj")["stages"][1]["mergedPath"] == "/workspace/tj/reward/merged"


async def test_stage_fails_then_succeeds_on_retry(cluster: Cluster, operator: OperatorThread) -> None:
    await cluster.apply(base_run("retry"))
    await wait_for(lambda: "retry-sft-1" in cluster.job_names(), what="sft-1")
    await cluster.fail_stage("retry-sft-1", "pod OOMKilled", log_tail="Traceback ...\nRuntimeError: NaN loss\n")
    await wait_for(lambda: "retry-sft-2" in cluster.job_names(), what="sft-2 (retry)")
    await wait_for(lambda: cluster.stage("retry", "sft")["attempts"] == 2, what="status of the retry")
    sft = cluster.stage("retry", "sft")
    assert sft["attempts"] == 2 and sft["jobName"] == "retry-sft-2"
    assert sft["message"] == "attempt 1 failed: pod OOMKilled: RuntimeError: NaN loss"
    await cluster.finish_stage("retry-sft-2")
    await wait_for(lambda: cluster.stage("retry", "reward").get("jobName") == "retry-reward-1", what="reward-1")
    assert cluster.stage("retry", "sft")["phase"] == "Succeeded"
    warnings = [e for e in events(cluster) if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["StageRetrying"]


async def test_retries_exhausted_fail_the_run(cluster: Cluster, operator: OperatorThread) -> None:
    run = base_run("doomed")
    run["spec"]["sft"]["retries"] = 1
    await cluster.apply(run)
    for attempt in (1, 2):
        job = f"doomed-sft-{attempt}"
        await wait_for(lambda job=job: job in cluster.job_names(), what=job)
        await cluster.fail_stage(job, "NCCL timeout")
    await wait_for(lambda: cluster.status("doomed").get("phase") == "Failed", what="run Failed")
    status = cluster.status("doomed")
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and "NCCL timeout" in stalled["message"]
    assert cluster.stage("doomed", "sft")["phase"] == "Failed"
    assert cluster.stage("doomed", "reward")["phase"] == "Pending"
    assert cluster.job_names() == ["doomed-sft-1", "doomed-sft-2"]


# A real API server refuses this spec (the CRD's CEL rule, test_enforcement.py); the operator's own
# check is the second line, for a run stored under an older CRD: the schema rule is off here.
@pytest.mark.kmock(lenient=frozenset({"schema"}))
async def test_invalid_spec_is_reported_once(cluster: Cluster, operator: OperatorThread) -> None:
    bad = base_run("bad", pipeline=["dpo", "sft"])
    await cluster.apply(bad)
    await wait_for(lambda: cluster.status("bad").get("phase") == "Failed", what="invalid run Failed")
    status = cluster.status("bad")
    assert status["message"].startswith("invalid spec: ") and "pipeline" in status["message"]
    assert next(c for c in status["conditions"] if c["type"] == "Stalled")["reason"] == "InvalidSpec"
    # The operator keeps working for other runs, and never retried the invalid one.
    await cluster.apply(dpo_run("good"))
    await run_through(cluster, "good", ["sft", "dpo"])
    assert not [j for j in cluster.job_names() if j.startswith("bad-")]
    bad_writes = [e for e in events(cluster) if e["involvedObject"]["name"] == "bad"]
    assert len(bad_writes) == 1 and bad_writes[0]["reason"] == "InvalidSpec"
    assert [w for w in cluster.writes() if w[3] == "bad" and w[2] == "status"] == [
        ("update", "rlhfruns", "status", "bad", "operator")
    ]


async def test_suspend_and_resume(cluster: Cluster, operator: OperatorThread) -> None:
    await cluster.apply(base_run("pause"))
    await wait_for(lambda: "pause-sft-1" in cluster.job_names(), what="sft-1")
    await cluster.set_job_condition("pause-sft-1", "Running")
    job = lambda: cluster.kmock.objects["kubeflow.org/v1/pytorchjobs", NAMESPACE, "pause-sft-1"].raw  # noqa: E731

    await cluster.patch_run("pause", {"spec": {"suspend": True}})
    await wait_for(lambda: job()["spec"]["runPolicy"]["suspend"] is True, what="job suspended")
    await wait_for(lambda: cluster.status("pause").get("phase") == "Suspended", what="run Suspended")
    assert cluster.status("pause")["observedGeneration"] == 2
    assert cluster.stage("pause", "sft")["phase"] == "Suspended"

    await cluster.patch_run("pause", {"spec": {"suspend": False}})
    await wait_for(lambda: job()["spec"]["runPolicy"]["suspend"] is False, what="job resumed")
    await wait_for(lambda: cluster.status("pause").get("phase") == "Running", what="run Running")
    await run_through(cluster, "pause", ["sft", "reward", "ppo"])


@pytest.mark.parametrize("retention", ["Retain", "Delete"])
async def test_deletion_follows_retention(cluster: Cluster, operator: OperatorThread, retention: str) -> None:
    name = f"gone-{retention.lower()}"
    created = await cluster.apply(base_run(name, storage={"size": "1Gi", "retention": retention}))
    uid = created["metadata"]["uid"]
    await wait_for(lambda: f"{name}-sft-1" in cluster.job_names(), what="sft-1")
    await wait_for(lambda: cluster.status(name).get("phase") == "Running", what="status")
    pvc = cluster.kmock.live("v1/persistentvolumeclaims", NAMESPACE)[0]
    for kind in ("v1/configmaps", "networking.k8s.io/v1/networkpolicies", "kubeflow.org/v1/pytorchjobs"):
        for child in cluster.kmock.live(kind, NAMESPACE):
            (ref,) = child["metadata"]["ownerReferences"]
            assert (ref["uid"], ref["kind"], ref["controller"]) == (uid, "RLHFRun", True)
    refs = pvc["metadata"].get("ownerReferences", [])
    assert [r["uid"] for r in refs] == ([uid] if retention == "Delete" else [])
    assert not cluster.run(name)["metadata"].get("finalizers")  # nothing blocks the deletion

    await cluster.delete_run(name)
    removed = cluster.kmock.collect_garbage(uid)  # what Kubernetes' GC does with ownerReferences
    assert sorted(r.split("/")[0] for r in removed) == sorted(
        ["ConfigMap", "NetworkPolicy", "PyTorchJob"] + (["PersistentVolumeClaim"] if retention == "Delete" else [])
    )
    kept = [p["metadata"]["name"] for p in cluster.kmock.live("v1/persistentvolumeclaims", NAMESPACE)]
    assert kept == ([f"{name}-data"] if retention == "Retain" else [])
    # The operator recreates nothing for a deleted run (a later run proves it kept watching).
    await cluster.apply(dpo_run("after"))
    await wait_for(lambda: "after-sft-1" in cluster.job_names(), what="next run's job")
    assert not [j for j in cluster.job_names() if j.startswith(name)]


async def test_restart_mid_run_creates_no_duplicates(cluster: Cluster) -> None:
    url = str(cluster.kmock.url).rstrip("/")
    first = await asyncio.to_thread(OperatorThread(url).start)
    await cluster.apply(base_run("resume"))
    await wait_for(lambda: "resume-sft-1" in cluster.job_names(), what="sft-1")
    await cluster.finish_stage("resume-sft-1")
    # Stopped after the pass that created reward-1 has recorded it (else a restart re-sends the
    # create and gets a harmless 409, which this test counts).
    await wait_for(lambda: cluster.stage("resume", "reward").get("jobName"), what="reward-1 recorded")
    await asyncio.to_thread(first.stop)
    assert first.error is None

    # While the operator is down the reward stage finishes.
    await cluster.finish_stage("resume-reward-1")

    second = await asyncio.to_thread(OperatorThread(url).start)
    try:
        await wait_for(lambda: "resume-ppo-1" in cluster.job_names(), what="ppo-1 after restart")
        await cluster.finish_stage("resume-ppo-1")
        await wait_for(lambda: cluster.status("resume").get("phase") == "Succeeded", what="run Succeeded")
    finally:
        await asyncio.to_thread(second.stop)
    assert cluster.job_names() == ["resume-ppo-1", "resume-reward-1", "resume-sft-1"]
    creates = operator_writes(cluster)
    assert creates["create pytorchjobs"] == 3  # not even a rejected duplicate
    assert creates["create persistentvolumeclaims"] == 1 and creates["create configmaps"] == 3
    assert cluster.stage("resume", "reward")["metrics"] == {"loss": 0.5}


# --- weak spots found by the fault drill ------------------------------------------------------


def reasons_posted(cluster: Cluster, run: str) -> list[tuple[str, str]]:
    return [(e["type"], e["reason"]) for e in events(cluster) if e["involvedObject"]["name"] == run]


async def test_deleted_job_counts_as_a_failed_attempt(cluster: Cluster, operator: OperatorThread) -> None:
    await cluster.apply(base_run("del"))
    await wait_for(lambda: "del-sft-1" in cluster.job_names(), what="sft-1")
    await cluster.set_job_condition("del-sft-1", "Running")
    await cluster.delete_job("del-sft-1")  # someone deletes the running job
    # (the job is created before the status patch that records it: wait for the status)
    await wait_for(lambda: cluster.stage("del", "sft").get("jobName") == "del-sft-2", what="sft-2 recorded")
    sft = cluster.stage("del", "sft")
    assert sft["attempts"] == 2 and sft["message"] == "attempt 1 failed: job del-sft-1 was deleted"
    await wait_for(lambda: ("Warning", "StageJobDeleted") in reasons_posted(cluster, "del"), what="warning event")
    # Recorded, then released: the finalizer no longer holds the deleted job.
    await wait_for(lambda: "del-sft-1" not in cluster.job_names(), what="sft-1 released")
    await run_through_from(cluster, "del", [("sft", 2), ("reward", 1), ("ppo", 1)])


async def run_through_from(cluster: Cluster, name: str, stages: list[tuple[str, int]]) -> None:
    for stage, attempt in stages:
        job = f"{name}-{stage}-{attempt}"
        await wait_for(lambda job=job: job in cluster.job_names(), what=f"job {job}")
        await cluster.finish_stage(job)
    await wait_for(lambda: cluster.status(name).get("phase") == "Succeeded", what=f"{name} Succeeded")


@pytest.mark.parametrize("pod_kept", [True, False])
async def test_finished_stage_removed_by_ttl_while_the_operator_was_down_is_not_run_again(
    cluster: Cluster, pod_kept: bool
) -> None:
    url = str(cluster.kmock.url).rstrip("/")
    first = await asyncio.to_thread(OperatorThread(url).start)
    await cluster.apply(base_run("ttl", ttlSecondsAfterFinished=60))
    await wait_for(lambda: "ttl-sft-1" in cluster.job_names(), what="sft-1")
    await wait_for(lambda: cluster.status("ttl").get("phase") == "Running", what="Running")
    await asyncio.to_thread(first.stop)

    # While the operator is down: the stage succeeds and the TTL controller deletes its job.
    await cluster.finish_stage("ttl-sft-1")
    await cluster.delete_job("ttl-sft-1")
    assert cluster.deleting("ttl-sft-1")  # the operator's finalizer holds it
    if not pod_kept:
        await cluster.delete_pod("ttl-sft-1-master-0")

    second = await asyncio.to_thread(OperatorThread(url).start)
    try:
        await wait_for(lambda: cluster.stage("ttl", "reward").get("jobName"), what="reward-1 recorded")
        await wait_for(lambda: "ttl-sft-1" not in cluster.job_names(), what="sft-1 released")
        sft = cluster.stage("ttl", "sft")
        assert sft["phase"] == "Succeeded" and sft["attempts"] == 1  # not run again
        conditions = {c["type"]: c for c in cluster.status("ttl")["conditions"]}
        if pod_kept:
            assert sft["metrics"] == {"loss": 0.5} and "ResultsRead" not in conditions
        else:
            assert sft["resultUnknown"] is True and "no master pod found" in sft["message"]
            assert conditions["ResultsRead"]["status"] == "False"
            assert ("Warning", "StageResultUnreadable") in reasons_posted(cluster, "ttl")
    finally:
        await asyncio.to_thread(second.stop)
    assert operator_writes(cluster)["create pytorchjobs"] == 2  # sft-1 once, then reward-1


async def test_missing_result_is_a_visible_warning(cluster: Cluster, operator: OperatorThread) -> None:
    await cluster.apply(base_run("nores"))
    await wait_for(lambda: "nores-sft-1" in cluster.job_names(), what="sft-1")
    await cluster.set_job_condition("nores-sft-1", "Running")
    await cluster.set_job_condition("nores-sft-1", "Succeeded")  # no Master pod, no result
    await wait_for(lambda: cluster.stage("nores", "reward").get("jobName"), what="reward-1 recorded")
    sft = cluster.stage("nores", "sft")
    assert sft["phase"] == "Succeeded" and sft["resultUnknown"] is True
    await wait_for(lambda: ("Warning", "StageResultUnreadable") in reasons_posted(cluster, "nores"), what="event")
    assert {c["type"]: c["status"] for c in cluster.status("nores")["conditions"]}["ResultsRead"] == "False"


async def test_jobs_of_a_deleted_run_are_released(cluster: Cluster, operator: OperatorThread) -> None:
    created = await cluster.apply(base_run("orphan"))
    await wait_for(lambda: "orphan-sft-1" in cluster.job_names(), what="sft-1")
    await wait_for(lambda: cluster.status("orphan").get("phase") == "Running", what="Running")
    await cluster.delete_run("orphan")
    # Kubernetes' garbage collector deletes the owned job; the operator's finalizer must not
    # keep it (or its GPUs) forever once the run is gone.
    assert created["metadata"]["uid"]
    await cluster.delete_job("orphan-sft-1")
    await wait_for(lambda: "orphan-sft-1" not in cluster.job_names(), what="job released")
