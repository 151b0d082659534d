"""Live runs against kmock: progress read from the Master pod's log, the hang deadline, guards,
Kueue's queue, and the printer columns `kubectl get rlhfrun -w` shows.

kmock has no pod logs: a rule serves the `log` subresource from a list of timestamped lines the
test appends to, honouring `sinceTime` and `tailLines` as the kubelet does.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kmock
import pytest
import pytest_asyncio
from rlhf_api.progress_status import parse_time
from rlhf_operator.crd import crd
from rlhf_operator.settings import OperatorSettings

from .conftest import NAMESPACE, Cluster, OperatorThread, base_run, wait_for
from .emulator import TRAINJOBS
from .kubelet_log import KubeletLog

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]
TEXT = kmock.headers({"Content-Type": "text/plain"})
INTERVAL = 0.3  # RLHF_PROGRESS_INTERVAL_SECONDS in these tests


class PodLog(KubeletLog):
    """One container's log as the kubelet keeps and serves it, with the trainer's progress events."""

    def event(self, at: datetime | None = None, **fields: Any) -> None:
        self.print("@@rlhf " + json.dumps({"stage": "sft"} | fields), at)


@pytest_asyncio.fixture
async def live_operator(cluster: Cluster) -> AsyncIterator[OperatorThread]:
    url = str(cluster.kmock.url).rstrip("/")
    settings = OperatorSettings(metrics_port=0, progress_interval_seconds=INTERVAL)
    thread = await asyncio.to_thread(OperatorThread(url, settings).start)
    yield thread
    await asyncio.to_thread(thread.stop)


def serve_log(cluster: Cluster, job: str) -> PodLog:
    log = PodLog()
    cluster.kmock[f"get /api/v1/namespaces/{NAMESPACE}/pods/{job}-master-0/log"] << TEXT << log.serve
    return log


async def running_master(cluster: Cluster, job: str) -> None:
    """The training operator started the job and its Master pod runs."""
    await wait_for(lambda: job in cluster.job_names(), what=job)
    await cluster.set_job_condition(job, "Running")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job}-master-0",
            "namespace": NAMESPACE,
            "labels": {"training.kubeflow.org/job-name": job, "training.kubeflow.org/replica-type": "master"},
        },
        "status": {"phase": "Running"},
    }
    await cluster._call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)


def events(cluster: Cluster, reason: str) -> list[dict[str, Any]]:
    return [e for e in cluster.kmock.live("v1/events", NAMESPACE) if e["reason"] == reason]


def healthy(cluster: Cluster, run: str) -> dict[str, Any]:
    return next((c for c in cluster.status(run).get("conditions", []) if c["type"] == "Healthy"), {})


# --- kubectl's printer columns, evaluated as kubectl does (the subset of JSONPath they use) -----

_FILTER = re.compile(r'^(\w+)\[\?\(@\.(\w+)=="([^"]*)"\)\]$')


def jsonpath(obj: Any, path: str) -> str:
    """`.a.b` and `.a[?(@.k=="v")].b`, as kubectl prints them ("" when absent)."""
    value: Any = obj
    for part in re.findall(r'[^.\[]+(?:\[\?\(@\.\w+=="[^"]*"\)\])?', path):
        match = _FILTER.match(part)
        if match:
            items = value.get(match.group(1)) if isinstance(value, dict) else None
            value = next((i for i in items or [] if i.get(match.group(2)) == match.group(3)), None)
        else:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return ""
    return str(value)


def get_w_rows(snapshots: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """What `kubectl get rlhfrun -w` prints for these successive states (priority-0 columns):
    the header and the rows' cells. Ages are fixed ("5m") so that the sample is stable."""
    columns = [c for c in crd()["spec"]["versions"][0]["additionalPrinterColumns"] if not c.get("priority")]
    headers = ["NAME", *(c["name"].upper() for c in columns)]
    rows = [
        [str(s["metadata"]["name"])] + ["5m" if c["type"] == "date" else jsonpath(s, c["jsonPath"]) for c in columns]
        for s in snapshots
    ]
    return headers, rows


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """kubectl's layout: columns padded to the widest cell, three spaces apart, <none> for a
    column whose JSONPath finds nothing."""
    rows = [[cell or "<none>" for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    return ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [headers, *rows]]


# --- tests ------------------------------------------------------------------------------------------


async def test_progress_from_the_master_pod_log_advances_the_status(
    cluster: Cluster, live_operator: OperatorThread
) -> None:
    log = serve_log(cluster, "demo-sft-1")
    await cluster.apply(base_run("demo"))
    await running_master(cluster, "demo-sft-1")
    start = datetime.now(UTC) - timedelta(seconds=60)
    log.print("loading the model", start)
    for step in (10, 20):  # 10 steps per 10 s: 1 step/s
        log.event(start + timedelta(seconds=step), step=step, max_steps=200, loss=2.0 - step / 100)

    def progress() -> dict[str, Any]:
        return cluster.stage("demo", "sft").get("progress") or {}

    first = await wait_for(lambda: progress().get("step") == 20 and progress(), what="step 20")
    assert first["totalSteps"] == 200 and first["percent"] == 10.0 and first["stepsPerSecond"] == 1.0
    assert first["metrics"] == {"loss": 1.8}
    status = cluster.status("demo")
    assert (status["stageProgress"], status["eta"], status["progress"]) == ("10%", "3m", "0/3 stages")

    log.event(start + timedelta(seconds=60), step=80, max_steps=200, loss=1.1)
    later = await wait_for(lambda: progress().get("step") == 80 and progress(), what="step 80")
    assert later["percent"] == 40.0 and later["stepsPerSecond"] == 1.5  # 60 steps in 40 s
    finish = parse_time(later["estimatedCompletionTime"])  # 120 steps left at 1.5/s after step 80
    assert finish is not None and abs(finish - (start + timedelta(seconds=140))) < timedelta(milliseconds=1)
    assert cluster.status("demo")["eta"] == "1m"

    # the reads: the Master pod's container, timestamps, a tail bound, then from the last line on
    assert all(r["container"] == "pytorch" and r["timestamps"] == "true" and "tailLines" in r for r in log.reads)
    assert "sinceTime" not in log.reads[0] and "sinceTime" in log.reads[-1]
    # the budget: at most one log read per interval, and no status write without news
    began = time.monotonic()
    reads_before, patches_before = len(log.reads), _status_patches(cluster)
    assert patches_before >= 3  # the first status, step 20, step 80
    await asyncio.sleep(8 * INTERVAL)
    elapsed = time.monotonic() - began
    assert len(log.reads) - reads_before <= elapsed / INTERVAL + 1
    assert _status_patches(cluster) == patches_before  # nothing new in the log: nothing written


def _status_patches(cluster: Cluster) -> int:
    return sum(1 for t in cluster.kmock.tally if t[:3] == ("update", "rlhfruns", "status") and t[4] == "operator")


async def test_a_stage_whose_log_stops_is_retried_with_stage_stalled(
    cluster: Cluster, live_operator: OperatorThread
) -> None:
    log = serve_log(cluster, "demo-sft-1")
    run = base_run("demo")
    run["spec"]["sft"].update(progressDeadlineSeconds=2, startupProgressDeadlineSeconds=30)
    await cluster.apply(run)
    await running_master(cluster, "demo-sft-1")
    log.event(step=5, max_steps=100)
    await wait_for(lambda: (cluster.stage("demo", "sft").get("progress") or {}).get("step") == 5, what="step 5")
    # the trainer hangs in a collective: no more lines
    await wait_for(lambda: "demo-sft-2" in cluster.job_names(), timeout=15, what="the retry")
    stalled = await wait_for(lambda: events(cluster, "StageStalled"), what="StageStalled")
    assert stalled[0]["type"] == "Warning" and "no progress event for 2s" in stalled[0]["message"]
    # the job and the event go first, then the status that records them
    sft = await wait_for(lambda: cluster.stage("demo", "sft").get("attempts") == 2 and cluster.stage("demo", "sft"))
    assert "stalled" in sft["message"] and sft["jobName"] == "demo-sft-2"
    await wait_for(lambda: "demo-sft-1" not in cluster.job_names(), what="the stalled job ended")


@pytest.mark.parametrize("action", ["stop", "warn"])
async def test_kl_above_max_kl_is_unhealthy_and_stop_fails_the_stage(
    cluster: Cluster, live_operator: OperatorThread, action: str
) -> None:
    log = serve_log(cluster, "demo-sft-1")
    run = base_run("demo")
    run["spec"]["sft"]["guards"] = {"maxKL": 0.5, "action": action}
    await cluster.apply(run)
    await running_master(cluster, "demo-sft-1")
    log.event(step=10, max_steps=100, kl=0.2)
    log.event(step=20, max_steps=100, kl=0.93)
    await wait_for(lambda: healthy(cluster, "demo").get("status") == "False", what="Healthy=False")
    assert healthy(cluster, "demo")["reason"] == "GuardTripped"
    tripped = await wait_for(lambda: events(cluster, "GuardTripped"), what="GuardTripped")
    assert tripped[0]["type"] == "Warning" and "kl=0.93 (> maxKL 0.5)" in tripped[0]["message"]
    if action == "warn":
        await asyncio.sleep(4 * INTERVAL)
        assert cluster.stage("demo", "sft")["phase"] == "Running" and cluster.job_names() == ["demo-sft-1"]
        return
    await wait_for(lambda: cluster.status("demo").get("phase") == "Failed", what="run Failed")
    sft = cluster.stage("demo", "sft")
    assert sft["phase"] == "Failed" and sft["attempts"] == 1 and "checkpoints are kept" in sft["message"]
    await wait_for(lambda: "demo-sft-1" not in cluster.job_names(), what="the job ended")
    assert cluster.job_names() == []  # not retried
    assert cluster.kmock.live("v1/persistentvolumeclaims", NAMESPACE)  # the volume (and checkpoints) stay


async def test_a_job_kueue_holds_shows_its_stage_queued(cluster: Cluster, live_operator: OperatorThread) -> None:
    await cluster.apply(base_run("demo", queueName="team-a"))
    await wait_for(lambda: cluster.stage("demo", "sft").get("phase") == "Queued", what="Queued")
    sft = cluster.stage("demo", "sft")
    assert sft["message"] == "waiting for admission by Kueue queue team-a"
    assert cluster.status("demo").get("phase") == "Pending"
    job = cluster.kmock.objects["kubeflow.org/v1/pytorchjobs", NAMESPACE, "demo-sft-1"].raw
    assert job["spec"]["runPolicy"]["suspend"] is True
    # Kueue admits the workload: it unsuspends the job, the training operator runs it
    path = f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs/demo-sft-1"
    await cluster._call("PATCH", path, {"spec": {"runPolicy": {"suspend": False}}}, "application/merge-patch+json")
    await cluster.set_job_condition("demo-sft-1", "Running")
    await wait_for(lambda: cluster.stage("demo", "sft").get("phase") == "Running", what="Running")
    assert events(cluster, "StageAdmitted")


async def test_kubectl_get_w_sample_moves_with_progress(cluster: Cluster, live_operator: OperatorThread) -> None:
    """The README's `kubectl get rlhfrun -w` sample: the printer columns over the status as the
    operator wrote it while sft advanced, finished, and reward started."""
    sft_log, reward_log = serve_log(cluster, "demo-sft-1"), serve_log(cluster, "demo-reward-1")
    await cluster.apply(base_run("demo"))
    snapshots: list[dict[str, Any]] = []

    def snap() -> None:
        if not snapshots or snapshots[-1]["status"] != cluster.run("demo")["status"]:
            snapshots.append(cluster.run("demo"))

    await wait_for(lambda: cluster.status("demo").get("phase") == "Running", what="Running")
    snap()
    await running_master(cluster, "demo-sft-1")
    start = datetime.now(UTC) - timedelta(minutes=10)
    for minute, step in ((2, 60), (6, 180), (10, 300)):
        sft_log.event(start + timedelta(minutes=minute), step=step, max_steps=600, loss=1.0)
        await wait_for(lambda step=step: cluster.status("demo").get("stageProgress") == f"{step // 6}%", what=step)
        snap()
    await cluster.delete_pod("demo-sft-1-master-0")  # finish_stage creates it again, terminated
    await cluster.finish_stage("demo-sft-1")
    await wait_for(lambda: cluster.status("demo").get("currentStage") == "reward", what="reward")
    snap()
    await running_master(cluster, "demo-reward-1")
    start = datetime.now(UTC) - timedelta(minutes=1)
    for seconds, step in ((20, 20), (60, 100)):
        reward_log.event(start + timedelta(seconds=seconds), stage="reward", step=step, max_steps=400)
        await wait_for(lambda step=step: cluster.status("demo").get("stageProgress") == f"{step // 4}%", what=step)
        snap()

    headers, rows = get_w_rows(snapshots)
    assert headers == ["NAME", "PHASE", "STAGE", "PROGRESS", "ETA", "READY", "AGE"]
    assert [r[2:5] for r in rows] == [
        ["sft", "", ""],
        ["sft", "10%", ""],
        ["sft", "30%", "14m"],  # 0.5 step/s: 420 steps left
        ["sft", "50%", "10m"],
        ["reward", "", ""],
        ["reward", "5%", ""],
        ["reward", "25%", "2m"],  # 2 steps/s: 300 steps left
    ]
    sample = "\n".join(table(headers, rows))
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert sample in readme, f"README.md's `kubectl get rlhfrun -w` sample is stale; it is now:\n{sample}"


async def test_request_budget_per_running_stage(cluster: Cluster, live_operator: OperatorThread) -> None:
    """While a stage trains and prints a line every interval: one log read and at most one status
    patch per interval, nothing else (the figures docs/architecture.md quotes)."""
    log = serve_log(cluster, "demo-sft-1")
    await cluster.apply(base_run("demo"))
    await running_master(cluster, "demo-sft-1")
    log.event(step=1, max_steps=1000)
    await wait_for(lambda: (cluster.stage("demo", "sft").get("progress") or {}).get("step") == 1, what="step 1")
    before = len(cluster.kmock.tally)
    began = time.monotonic()
    intervals = 10
    for i in range(intervals):
        log.event(step=10 * (i + 1), max_steps=1000, loss=1.0 / (i + 1))
        await asyncio.sleep(INTERVAL)
    elapsed = time.monotonic() - began
    ours = [t for t in cluster.kmock.tally[before:] if t[4] == "operator"]
    reads = sum(1 for t in ours if t[:3] == ("fetch", "pods", "log"))  # kmock's names: fetch = GET
    patches = sum(1 for t in ours if t[:3] == ("update", "rlhfruns", "status"))  # update = PATCH
    assert len(ours) == reads + patches, ours  # nothing else: no pod GETs, no events
    assert reads <= elapsed / INTERVAL + 1 and patches <= reads
    assert patches >= intervals // 2  # the status does follow the log
    print(f"{elapsed / INTERVAL:.1f} intervals: {reads} log reads, {patches} status patches")


async def test_trainjob_progress_from_the_node_0_pod(cluster: Cluster, live_operator: OperatorThread) -> None:
    """TrainJob's Master pod has no predictable name: found once by its labels, then read."""
    log = PodLog()
    pod_name = "demo-sft-1-node-0-0-abcde"
    cluster.kmock[f"get /api/v1/namespaces/{NAMESPACE}/pods/{pod_name}/log"] << TEXT << log.serve
    await cluster.apply(base_run("demo", launcher="trainjob"))
    await wait_for(lambda: "demo-sft-1" in cluster.job_names(TRAINJOBS), what="the trainjob")
    await cluster.set_job_condition("demo-sft-1", "Created", resource=TRAINJOBS)  # Trainer v2 has no Running
    other = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unrelated", "namespace": NAMESPACE}}
    await cluster._call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", other)
    labels = {
        "jobset.sigs.k8s.io/jobset-name": "demo-sft-1",
        "jobset.sigs.k8s.io/replicatedjob-name": "node",
        "batch.kubernetes.io/job-completion-index": "0",
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod_name, "namespace": NAMESPACE, "labels": labels}}
    await cluster._call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
    log.event(step=7, max_steps=70)
    await wait_for(lambda: cluster.status("demo").get("stageProgress") == "10%", what="10%")
    assert {r["container"] for r in log.reads} == {"node"}
