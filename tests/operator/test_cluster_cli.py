"""`rlhf status` and `rlhf logs` against the kmock emulator, through a kubeconfig, as a user runs them.

The CLI uses the synchronous kubernetes client, so it runs in a thread while the emulator
serves on the test's event loop. kmock has no pod logs: the tests serve the `log` subresource
with a reaction (whole text, or a chunked stream for --follow).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import sys
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from rlhf_cli import main as cli
from rlhf_operator.settings import OperatorSettings

from .conftest import NAMESPACE, Cluster, OperatorThread, base_run, wait_for
from .enforcement import ADMIN_TOKEN

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]
TEXT = kmock.headers({"Content-Type": "text/plain"})  # what the API server sends for pods/log


@pytest.fixture
def kubeconfig(cluster: Cluster, tmp_path: Path) -> str:
    """A kubeconfig whose current context points at the emulator, namespace `team`."""
    url = str(cluster.kmock.url).rstrip("/")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": ADMIN_TOKEN}}],  # the user, not the operator
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester", "namespace": NAMESPACE}}],
        "current-context": "kmock",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


async def rlhf(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def set_status(cluster: Cluster, name: str, status: dict[str, Any]) -> None:
    path = f"/apis/rlhf.dev/v1alpha1/namespaces/{NAMESPACE}/rlhfruns/{name}/status"
    await cluster._call("PATCH", path, {"status": status}, "application/merge-patch+json")


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps tables at the terminal width


async def test_status_and_logs_follow_a_run_driven_by_the_operator(
    cluster: Cluster, operator: OperatorThread, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await cluster.apply(base_run("demo"))
    await wait_for(lambda: "demo-sft-1" in cluster.job_names(), what="the sft job")
    code, out, _ = await rlhf(capsys, "status", "demo", "--kubeconfig", kubeconfig)
    assert code == 0, out
    assert "RLHFRun team/demo" in out and "phase Running" in out
    assert "Waiting on: the training operator to start the pods of PyTorchJob demo-sft-1" in out

    # the training operator starts the job; its Master pod runs and logs
    await cluster.set_job_condition("demo-sft-1", "Running")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "demo-sft-1-master-0",
            "namespace": NAMESPACE,
            "labels": {"training.kubeflow.org/job-name": "demo-sft-1", "training.kubeflow.org/replica-type": "master"},
        },
        "status": {"phase": "Running"},
    }
    await cluster._call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
    await wait_for(lambda: cluster.stage("demo", "sft").get("phase") == "Running", what="sft Running")
    code, out, _ = await rlhf(capsys, "status", "demo", "--kubeconfig", kubeconfig)
    assert "Waiting on: stage sft to finish training (PyTorchJob demo-sft-1 is running)" in out
    assert "demo-sft-1" in out

    log = f"/api/v1/namespaces/{NAMESPACE}/pods/demo-sft-1-master-0/log"
    event = '@@rlhf {"stage":"sft","step":10,"max_steps":600,"loss":1.25}'
    cluster.kmock[f"get {log}"] << TEXT << f"loading\n{event}\n".encode()
    code, out, err = await rlhf(capsys, "logs", "demo", "--stage", "sft", "--kubeconfig", kubeconfig)
    assert code == 0, err
    assert out.splitlines() == ["loading", "[sft] step 10/600 loss=1.25 | 0s"]  # as rlhf run prints it
    assert "demo-sft-1-master-0" in err and "pytorch" in err
    request = next(r for r in reversed(list(cluster.kmock)) if r.url.path == log)
    assert request.params.get("container") == "pytorch" and request.params.get("timestamps") == "true"
    code, out, err = await rlhf(capsys, "logs", "demo", "--stage", "sft", "--raw", "--kubeconfig", kubeconfig)
    assert out.splitlines() == ["loading", event]
    request = next(r for r in reversed(list(cluster.kmock)) if r.url.path == log)
    assert "timestamps" not in request.params

    # the whole run through: a finished run shows its metrics and waits on nothing
    async with cluster.kmock.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/demo-sft-1-master-0") as resp:
        assert resp.status < 400  # finish_stage creates the pod again, terminated with the result
    await cluster.finish_stage("demo-sft-1", metrics={"task_accuracy": 0.475})
    for stage in ("reward", "ppo"):
        job = f"demo-{stage}-1"
        await wait_for(lambda job=job: job in cluster.job_names(), what=job)
        await cluster.finish_stage(job, metrics={"task_accuracy_before": 0.475, "task_accuracy": 0.808})
    await wait_for(lambda: cluster.status("demo").get("phase") == "Succeeded", what="Succeeded")
    code, out, _ = await rlhf(capsys, "status", "demo", "--kubeconfig", kubeconfig)
    assert "phase Succeeded" in out and "Waiting on: nothing: every stage succeeded" in out
    assert "task_accuracy=0.808" in out
    assert "Ready" in out and "True" in out


async def test_logs_follow_streams_until_the_container_ends(
    cluster: Cluster, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await cluster.apply(base_run("demo"))
    await set_status(
        cluster,
        "demo",
        {
            "phase": "Running",
            "currentStage": "reward",
            "stages": [
                {"name": "sft", "phase": "Succeeded", "attempts": 1, "jobName": "demo-sft-1"},
                {"name": "reward", "phase": "Running", "attempts": 2, "jobName": "demo-reward-2"},
            ],
        },
    )
    for attempt in (1, 2):
        await cluster.create_master_pod(f"demo-reward-{attempt}", None)
    base = f"/api/v1/namespaces/{NAMESPACE}/pods"
    # the API server's timestamps=true lines, streamed in chunks: a line split across two chunks too
    chunks = (
        b"2026-12-06T12:00:00.123456789Z loading the policy\n",
        b'2026-12-06T12:00:10Z @@rlhf {"stage":"reward","step":1,"max_steps":100,"loss":0.7}\n',
        b'2026-12-06T12:00:20Z @@rlhf {"stage":"reward","step":11,"max_steps":100,"loss":0.69,"accuracy":0.5}\n'
        b'2026-12-06T12:00:21Z @@rlhf {"stage":"reward","step":12,"max_st',
        b'eps":100,"loss":0.6}\n2026-12-06T12:00:30Z Traceback (most recent call last): not really\n',
        b'2026-12-06T12:01:00Z @@rlhf {"stage":"reward","step":51,"max_steps":100,"loss":0.4,"accuracy":0.75}\n',
        b'2026-12-06T12:01:50Z @@rlhf {"stage":"reward","event":"done","metrics":{"pair_accuracy":0.98}}\n',
    )
    cluster.kmock[f"get {base}/demo-reward-2-master-0/log"] << TEXT << chunks
    cluster.kmock[f"get {base}/demo-reward-1-master-0/log"] << TEXT << b"first attempt\n"

    code, out, err = await rlhf(capsys, "logs", "demo", "-f", "--kubeconfig", kubeconfig)  # the current stage
    assert code == 0, err
    assert out.splitlines() == [  # progress as the plain display's text, at the log's times; the rest as is
        "loading the policy",
        "[reward] step 1/100 loss=0.7 | 0s",
        "[reward] step 11/100 loss=0.69 accuracy=0.5 | 10s, ETA 1m29s, 1 steps/s",
        "Traceback (most recent call last): not really",
        "[reward] step 51/100 loss=0.4 accuracy=0.75 | 50s, ETA 49s, 1 steps/s",
        "[reward] done: pair_accuracy=0.98",
    ]
    request = next(r for r in reversed(list(cluster.kmock)) if r.url.path.endswith("demo-reward-2-master-0/log"))
    assert request.params.get("follow") == "true"

    first = ("logs", "demo", "--stage", "reward", "--attempt", "1", "--kubeconfig", kubeconfig)
    code, out, err = await rlhf(capsys, *first)
    assert code == 0 and out.splitlines() == ["first attempt"], err


def progress(step: int, total: int, seconds_left: float, **metrics: float) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    stamp = lambda delta: (now + dt.timedelta(seconds=delta)).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return {
        "step": step,
        "totalSteps": total,
        "percent": 100.0 * step / total,
        "stepsPerSecond": 2.0,
        "estimatedCompletionTime": stamp(seconds_left),
        "lastProgressTime": stamp(0),
        "metrics": metrics,
    }


async def test_status_watch_follows_the_progress_until_the_run_succeeds(
    cluster: Cluster, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rlhf status -w` without a terminal: a plain line per change, from the API alone, until Succeeded."""
    run = base_run("demo", pipeline=["sft", "reward"])
    del run["spec"]["ppo"]  # a section outside the pipeline is refused (the CRD's CEL rule)
    await cluster.apply(run)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sft = {"name": "sft", "phase": "Running", "attempts": 1, "jobName": "demo-sft-1", "startTime": started}
    reward = {"name": "reward", "phase": "Pending", "attempts": 0}
    await set_status(cluster, "demo", {"phase": "Running", "currentStage": "sft", "stages": [sft, reward]})
    watching = asyncio.create_task(rlhf(capsys, "status", "demo", "-w", "--kubeconfig", kubeconfig))
    await wait_for(lambda: ("watch", "rlhfruns", "", "", "test") in cluster.kmock.tally, what="the CLI's watch")

    steps = [(120, 540.0, {"loss": 1.5}), (120, 530.0, {"loss": 1.5}), (360, 120.0, {"loss": 0.75})]
    for step, left, numbers in steps:  # the second changes only the estimate: no new line
        await set_status(
            cluster, "demo", {"stages": [dict(sft, progress=progress(step, 600, left, **numbers)), reward]}
        )
        await asyncio.sleep(0.1)
    done = dict(sft, phase="Succeeded", completionTime=started, metrics={"train_loss": 0.7})
    queued = dict(reward, phase="Queued", attempts=1, message="waiting for admission by Kueue queue team-queue")
    await set_status(cluster, "demo", {"currentStage": "reward", "progress": "1/2 stages", "stages": [done, queued]})
    await asyncio.sleep(0.1)
    running = dict(
        queued, phase="Running", message=None, startTime=started, progress=progress(50, 200, 75.0, accuracy=0.8)
    )
    await set_status(cluster, "demo", {"stages": [done, running]})
    await asyncio.sleep(0.1)
    finished = dict(running, phase="Succeeded", progress=None, completionTime=started, metrics={"pair_accuracy": 0.99})
    await set_status(cluster, "demo", {"phase": "Succeeded", "progress": "2/2 stages", "stages": [done, finished]})

    code, out, err = await asyncio.wait_for(watching, 20)
    assert code == 0, err
    lines = out.splitlines()
    timing = r" \| \d+s, ETA \d+m\d\ds, 2 steps/s"  # elapsed since startTime, the operator's ETA and rate
    expected = [
        "RLHFRun team/demo \\(sft -> reward\\)",
        "run running, 0/2 stages",
        "\\[sft\\] starting",
        "\\[sft\\] step 120/600 loss=1.5" + timing,  # once: the next version changed only the estimate
        "\\[sft\\] step 360/600 loss=0.75" + timing,
        "run running, 1/2 stages",
        "\\[sft\\] done in 0s: train_loss=0.7",
        "\\[reward\\] queued: waiting for admission by Kueue queue team-queue",
        "\\[reward\\] step 50/200 accuracy=0.8" + timing,
        "\\[reward\\] done in 0s: pair_accuracy=0.99",
        "run succeeded",
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


async def test_status_says_what_a_queued_run_waits_on(
    cluster: Cluster, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await cluster.apply(base_run("queued", queueName="team-queue"))
    await set_status(
        cluster,
        "queued",
        {
            "phase": "Running",
            "currentStage": "sft",
            "stages": [{"name": "sft", "phase": "Running", "attempts": 1, "jobName": "queued-sft-1"}],
        },
    )
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {
            "name": "queued-sft-1",
            "namespace": NAMESPACE,
            "labels": {"kueue.x-k8s.io/queue-name": "team-queue"},
        },
        "spec": {"runPolicy": {"suspend": True}, "pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": {}}}},
    }
    await cluster._call("POST", f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs", job)
    code, out, _ = await rlhf(capsys, "status", "queued", "--kubeconfig", kubeconfig)
    assert code == 0
    assert "Waiting on: Kueue to admit PyTorchJob queued-sft-1 (queue team-queue)" in out


async def test_clear_errors_for_a_missing_run_stage_or_pod(
    cluster: Cluster, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await rlhf(capsys, "status", "nope", "--kubeconfig", kubeconfig)
    assert code == 1 and "rlhfrun nope not found in namespace team" in err
    code, _, err = await rlhf(capsys, "status", "nope", "-n", "other", "--kubeconfig", kubeconfig)
    assert "namespace other" in err
    await cluster.apply(base_run("fresh"))
    code, out, _ = await rlhf(capsys, "status", "fresh", "--kubeconfig", kubeconfig)
    assert "Waiting on: the operator: the run has no status yet" in out
    code, _, err = await rlhf(capsys, "logs", "fresh", "--stage", "ppo", "--kubeconfig", kubeconfig)
    assert code == 1 and "has no stage 'ppo'" in err
    started = {"phase": "Running", "stages": [{"name": "sft", "phase": "Running", "attempts": 1}]}
    await set_status(cluster, "fresh", started)
    code, _, err = await rlhf(capsys, "logs", "fresh", "--stage", "sft", "--kubeconfig", kubeconfig)
    assert code == 1 and "no Master pod for job fresh-sft-1" in err


def test_unreachable_cluster_and_missing_kubeconfig(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["status", "demo", "--kubeconfig", str(tmp_path / "absent")])
    assert code == 1 and "cannot load a kubeconfig" in capsys.readouterr().err
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    code = cli.main(["status", "demo", "--kubeconfig", str(path)])
    assert code == 1 and "cannot reach the API server" in capsys.readouterr().err


def test_kubectl_plugin_names_itself(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """kubectl runs `kubectl-rlhf` from PATH for `kubectl rlhf ...`: its help says so."""
    monkeypatch.setattr(sys, "argv", ["kubectl-rlhf", "status", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        cli.kubectl_main()
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: kubectl rlhf status [-h] [-w] [-n NAMESPACE]")


@pytest.mark.skipif(
    "progress_interval_seconds" not in OperatorSettings.model_fields,
    reason="this operator reads no progress from the Master pod's log",
)
async def test_status_watch_shows_the_progress_the_operator_reads_from_the_log(
    cluster: Cluster, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end: the trainer's log -> the operator's status -> `rlhf status -w`."""
    url = str(cluster.kmock.url).rstrip("/")
    settings = OperatorSettings(metrics_port=0, progress_interval_seconds=0.3)
    operator = await asyncio.to_thread(OperatorThread(url, settings).start)
    try:
        await cluster.apply(base_run("demo"))
        await wait_for(lambda: "demo-sft-1" in cluster.job_names(), what="the sft job")
        await cluster.set_job_condition("demo-sft-1", "Running")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "demo-sft-1-master-0",
                "namespace": NAMESPACE,
                "labels": {
                    "training.kubeflow.org/job-name": "demo-sft-1",
                    "training.kubeflow.org/replica-type": "master",
                },
            },
            "status": {"phase": "Running"},
        }
        await cluster._call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
        start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=20)
        lines = [(0, "loading"), (10, '{"step":10,"loss":1.5}'), (20, '{"step":20,"loss":1.25}')]
        text = "".join(
            f"{(start + dt.timedelta(seconds=s)).isoformat().replace('+00:00', 'Z')} "
            + (f'@@rlhf {{"stage":"sft","max_steps":100,{line[1:]}' if line.startswith("{") else line)
            + "\n"
            for s, line in lines
        )
        cluster.kmock[f"get /api/v1/namespaces/{NAMESPACE}/pods/demo-sft-1-master-0/log"] << TEXT << text.encode()
        watching = asyncio.create_task(rlhf(capsys, "status", "demo", "-w", "--kubeconfig", kubeconfig))
        await wait_for(
            lambda: (cluster.stage("demo", "sft").get("progress") or {}).get("step") == 20, what="sft's progress"
        )
        await asyncio.sleep(0.3)
        await cluster.delete_pod("demo-sft-1-master-0")  # finish_stage creates it again, terminated
        await cluster.finish_stage("demo-sft-1", metrics={"train_loss": 0.7})
        for stage in ("reward", "ppo"):
            job = f"demo-{stage}-1"
            await wait_for(lambda job=job: job in cluster.job_names(), what=job)
            await cluster.finish_stage(job, metrics={"task_accuracy": 0.808})
        code, out, err = await asyncio.wait_for(watching, 30)
    finally:
        await asyncio.to_thread(operator.stop)
    assert code == 0, err
    # 10 steps in 10 s: 1 step/s, 80 steps left
    assert re.search(r"^\[sft\] step 20/100 loss=1.25 \| \d+s, ETA 1m\d\ds, 1 steps/s$", out, re.M), out
    assert out.startswith("RLHFRun team/demo (sft -> reward -> ppo)\n")
    assert "[sft] done in" in out and out.rstrip().endswith("run succeeded")
