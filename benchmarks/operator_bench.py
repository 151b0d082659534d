"""Operator load benchmark: N concurrent RLHFRuns (sft -> reward -> ppo) driven to completion.

The real kopf operator runs in its own process against kmock's emulator (tests/operator/emulator.py)
in the main thread, where a simulated training operator walks every job through Created,
Running (its Master pod running and logging the trainer's progress lines, served by one kmock
rule for every pod's `log`), the Master pod's result, Succeeded. Each stage runs for
--stage-seconds, so all N runs are running at once. Reported per N:
- create -> first PyTorchJob latency (median, p99), from the emulator's own clock, with the runs
  created at --rate per second (0: all at once, a burst that measures the queue, not the reaction);
- API requests and writes per completed run and per running-stage-minute, the operator's broken
  down by verb and kind; with progress reading, its pod log reads and status writes against the
  budget of one each per running stage per interval;
- the operator's CPU seconds and its peak RSS: the operator runs in its own process (a thread
  would share the GIL with the emulator and inflate both latency and CPU), beside the emulator
  process' CPU (emulator + simulated training operator).
kmock re-scans its request history on every request, so the history is bounded here
(Emulator.history_limit) to keep the emulator's cost from dominating.

Progress reading (the operator reading each running stage's Master pod log at a bounded rate) is
detected, not assumed: when StageStatus has no `progress` or OperatorSettings no progress
interval, the benchmark says so and measures the operator without it.

    python benchmarks/operator_bench.py                  # N = 10, 50, 100
    python benchmarks/operator_bench.py 1000             # the issue's size (minutes; use nice)
    python benchmarks/operator_bench.py 200 --rate 0 --stage-seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import itertools
import json
import logging
import multiprocessing
import re
import resource
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attrs
import kmock
import kopf
from kmock import Server, action

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rlhf_api.progress import MARKER  # noqa: E402
from rlhf_api.result import StageResult  # noqa: E402
from rlhf_api.status import StageStatus  # noqa: E402
from rlhf_operator.controller import handlers  # noqa: E402  (registers the handlers)
from rlhf_operator.controller.kube_client import Connection  # noqa: E402
from rlhf_operator.settings import OperatorSettings  # noqa: E402

from tests.operator.emulator import RLHFRUNS, Emulator  # noqa: E402

NAMESPACE = "bench"
CONCURRENCY = 16
STEPS_PER_SECOND = 2.0  # the simulated trainer's speed: one progress line per step
_server: dict[str, str] = {}
_LOG_PATH = re.compile(rf"^/api/v1/namespaces/{NAMESPACE}/pods/(?P<pod>[^/]+)/log$")


@kopf.on.login()
def _login(**_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=_server["url"], insecure=True)


def progress_setting() -> str | None:
    """The OperatorSettings field that sets how often a running stage's log is read, if this
    operator reads progress at all (StageStatus.progress is where it would write it)."""
    if "progress" not in StageStatus.model_fields:
        return None
    numeric = [
        name
        for name, info in OperatorSettings.model_fields.items()
        if "progress" in name and info.annotation in (int, float, "int", "float", int | None, float | None)
    ]
    preferred = [name for name in numeric if "interval" in name or "seconds" in name]
    return (preferred or numeric or [None])[0]


@attrs.define(kw_only=True)
class BenchEmulator(Emulator):
    """Notes when each PyTorchJob was created (the latency's end point) and hands it to the
    simulated training operator (no polling over every object)."""

    job_created: dict[str, float] = attrs.field(factory=dict, init=False)
    new_jobs: asyncio.Queue[str] = attrs.field(factory=asyncio.Queue, init=False)

    async def _handle(self, request: Any) -> Any:
        if (
            request.action == action.CREATE
            and request.resource is not None
            and request.resource.plural == "pytorchjobs"
        ):
            name = (request.data or {}).get("metadata", {}).get("name")
            if name and name not in self.job_created:
                self.job_created[name] = time.monotonic()
                self.new_jobs.put_nowait(name)
        return await super()._handle(request)


@dataclass
class Running:
    """A Master pod that is running: its stage, and when its first step was logged."""

    stage: str
    started: dt.datetime
    total: int


def stage_log(pod: Running, now: dt.datetime, params: Any) -> bytes:
    """What the API server would send for the pod's log: a line per step so far, after a model
    loading line; honours sinceTime, tailLines and timestamps as the real one does."""
    steps = min(pod.total, int((now - pod.started).total_seconds() * STEPS_PER_SECOND))
    lines = [(pod.started, "loading model and data")]
    for step in range(1, steps + 1):
        when = pod.started + dt.timedelta(seconds=step / STEPS_PER_SECOND)
        event = {"stage": pod.stage, "step": step, "max_steps": pod.total, "loss": round(2.0 / (1 + step / 50), 4)}
        if pod.stage == "ppo":
            event |= {"kl": round(0.01 * step / pod.total, 5), "reward_mean": round(step / pod.total, 4)}
        lines.append((when, MARKER + json.dumps(event, separators=(",", ":"))))
    since = params.get("sinceTime")
    if since:
        start = dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
        lines = [(when, text) for when, text in lines if when >= start]
    tail = params.get("tailLines")
    if tail and tail.isdigit():
        lines = lines[-int(tail) :] if int(tail) else []
    stamp = params.get("timestamps") == "true"
    text = "".join(
        (f"{when.strftime('%Y-%m-%dT%H:%M:%S.%fZ')} " if stamp else "") + line + "\n" for when, line in lines
    )
    return text.encode()


def run_body(name: str) -> dict[str, Any]:
    quick = {"retries": 1, "retryBackoffSeconds": 0}
    return {
        "apiVersion": "rlhf.dev/v1alpha1",
        "kind": "RLHFRun",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {"name": "builtin:tiny-llama"},
            "sft": {"dataset": {"source": "builtin:arithmetic"}, **quick},
            "reward": {"dataset": {"source": "builtin:arithmetic", "format": "preference"}, **quick},
            "ppo": {"dataset": {"source": "builtin:arithmetic"}, **quick},
            "placement": {"gpusPerWorker": 0},
            "storage": {"size": "1Gi"},
        },
    }


def operator_main(url: str, settings: dict[str, Any], ready: Any, go: Any, stop: Any, results: Any) -> None:
    """The operator in its own process: its CPU time and peak RSS are its own."""
    for name in ("kopf", "aiohttp.access", "rlhf_operator"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _server["url"] = url
    stop_flag, ready_flag = threading.Event(), threading.Event()
    threading.Thread(target=lambda: (stop.wait(), stop_flag.set()), daemon=True).start()
    threading.Thread(target=lambda: (ready_flag.wait(), ready.set()), daemon=True).start()
    baseline: list[float] = []

    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    # CPU is counted from the first apply on: imports and kopf's startup are excluded.
    threading.Thread(target=lambda: (go.wait(), baseline.append(cpu_seconds())), daemon=True).start()
    tuning = handlers.Tuning(concurrency=CONCURRENCY, error_backoff=0.1, error_backoff_max=2.0)
    memo = kopf.Memo(
        settings=OperatorSettings(metrics_port=0, **settings), tuning=tuning, connection=Connection(url, {})
    )
    asyncio.run(kopf.operator(clusterwide=True, standalone=True, stop_flag=stop_flag, ready_flag=ready_flag, memo=memo))
    results.put(
        {
            "cpu_seconds": cpu_seconds() - (baseline[0] if baseline else 0.0),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


class TrainingOperator:
    """Plays the Kubeflow training operator: every new job runs for `stage_seconds` with its
    Master pod running and logging progress, then succeeds."""

    def __init__(self, kmock: BenchEmulator, stage_seconds: float) -> None:
        self.kmock = kmock
        self.stage_seconds = stage_seconds
        self.tasks: set[asyncio.Task[None]] = set()
        self.running: dict[str, Running] = {}  # Master pod name -> its stage, while it runs
        self.running_seconds = 0.0  # summed over stages: pod running -> job Succeeded
        self.progress_seen: set[str] = set()  # jobs whose run's status showed their stage's progress
        self.log_reads: dict[str, list[float]] = {}  # Master pod -> when its log was read

    async def call(self, method: str, path: str, body: Any, content_type: str = "application/merge-patch+json") -> None:
        async with self.kmock.request(method, path, json=body, headers={"Content-Type": content_type}) as resp:
            await resp.read()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status}")

    def serve_log(self, request: kmock.Request) -> bytes:
        found = _LOG_PATH.match(request.url.path)
        name = found.group("pod") if found else ""
        self.log_reads.setdefault(name, []).append(time.monotonic())
        pod = self.running.get(name)
        return b"" if pod is None else stage_log(pod, dt.datetime.now(dt.UTC), request.params)

    def read_gaps(self) -> list[float]:
        """Seconds between consecutive reads of the same pod's log."""
        return [b - a for times in self.log_reads.values() for a, b in itertools.pairwise(times)]

    def saw_progress(self, run: str, stage: str) -> bool:
        status = self.kmock.objects[RLHFRUNS, NAMESPACE, run].raw.get("status") or {}
        entry = next((s for s in status.get("stages") or [] if s.get("name") == stage), {})
        return bool((entry.get("progress") or {}).get("step"))

    async def run_job(self, name: str) -> None:
        job = self.kmock.objects["kubeflow.org/v1/pytorchjobs", NAMESPACE, name].raw
        labels = job["metadata"]["labels"]
        stage, run = labels["rlhf.dev/stage"], labels["rlhf.dev/run"]
        status_path = f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs/{name}/status"
        conditions: list[dict[str, str]] = []
        for kind in ("Created", "Running"):
            conditions = [dict(c, status="True" if c["type"] == "Created" else "False") for c in conditions]
            conditions.append({"type": kind, "status": "True", "reason": f"Job{kind}"})
            await self.call("PATCH", status_path, {"status": {"conditions": conditions}})
        pod_name = f"{name}-master-0"
        started = dt.datetime.now(dt.UTC)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": NAMESPACE,
                "labels": {"training.kubeflow.org/job-name": name, "training.kubeflow.org/replica-type": "master"},
            },
            "spec": {"containers": [{"name": "pytorch", "image": "trainer"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {"name": "pytorch", "state": {"running": {"startedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ")}}}
                ],
            },
        }
        self.running[pod_name] = Running(stage, started, max(1, int(self.stage_seconds * STEPS_PER_SECOND)))
        await self.call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod, "application/json")
        await asyncio.sleep(self.stage_seconds)
        if self.saw_progress(run, stage):
            self.progress_seen.add(name)
        del self.running[pod_name]
        self.running_seconds += (dt.datetime.now(dt.UTC) - started).total_seconds()
        output = f"/workspace/{run}/{stage}"
        result = StageResult(
            stage=stage, status="succeeded", output_path=output, merged_path=f"{output}/merged", metrics={"loss": 0.5}
        )
        terminated = {"exitCode": 0, "reason": "Completed", "message": result.termination_message()}
        ended = {"phase": "Succeeded", "containerStatuses": [{"name": "pytorch", "state": {"terminated": terminated}}]}
        await self.call("PATCH", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod_name}", {"status": ended})
        conditions = [dict(c, status="False") if c["type"] == "Running" else c for c in conditions]
        conditions.append({"type": "Succeeded", "status": "True", "reason": "JobSucceeded"})
        await self.call("PATCH", status_path, {"status": {"conditions": conditions}})

    async def loop(self) -> None:
        while True:
            name = await self.kmock.new_jobs.get()
            task = asyncio.create_task(self.run_job(name))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench(
    n: int, *, rate: float, stage_seconds: float, interval: float, history_limit: int, timeout: float
) -> dict[str, Any]:
    setting = progress_setting()
    # The benchmark's operator and simulated training operator connect without tokens: the
    # emulator's authentication and RBAC (exercised by the operator tests) are off here; its
    # schema, names and selectors stay on, as on a real API server.
    lenient = frozenset({"authentication", "authorization"})
    async with BenchEmulator(history_limit=history_limit, lenient=lenient) as kmock_, Server(kmock_):
        kmock_.register()
        kmock_.objects["v1/namespaces", None, NAMESPACE] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE},
        }
        trainer = TrainingOperator(kmock_, stage_seconds)
        # One rule serves every pod's log (kmock matches reactions per request: one, not N).
        text = kmock.headers({"Content-Type": "text/plain"})
        kmock_["get", re.compile(_LOG_PATH.pattern)] << text << trainer.serve_log
        url = str(kmock_.url).rstrip("/")
        _server["url"] = url
        context = multiprocessing.get_context("spawn")
        ready, go, stop, results = context.Event(), context.Event(), context.Event(), context.Queue()
        settings = {setting: interval} if setting else {}
        operator = context.Process(
            target=operator_main, args=(url, settings, ready, go, stop, results), name="operator"
        )
        operator.start()
        await asyncio.to_thread(ready.wait, 60)
        # kopf is "ready" before its watches are up: wait for them, so latency excludes startup.
        watched = lambda: {t[1] for t in kmock_.tally if t[0] == "watch" and t[4] == "kopf"}  # noqa: E731
        while not {"rlhfruns", "pytorchjobs"} <= watched():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        trainer_task = asyncio.create_task(trainer.loop())
        tally_start = len(kmock_.tally)
        process_cpu = time.process_time()
        go.set()
        await asyncio.sleep(0.05)  # the operator notes its CPU baseline

        applied: dict[str, float] = {}

        async def apply(name: str) -> None:
            applied[name] = time.monotonic()
            async with kmock_.request(
                "POST", f"/apis/rlhf.dev/v1alpha1/namespaces/{NAMESPACE}/rlhfruns", json=copy.deepcopy(run_body(name))
            ) as resp:
                await resp.read()

        names = [f"run-{i:04d}" for i in range(n)]
        wall = time.monotonic()
        if rate > 0:  # paced arrivals: each create at its own time, not behind the previous one
            creates = []
            for i, name in enumerate(names):
                await asyncio.sleep(max(0.0, wall + i / rate - time.monotonic()))
                creates.append(asyncio.create_task(apply(name)))
            await asyncio.gather(*creates)
        else:
            await asyncio.gather(*(apply(name) for name in names))
        deadline = time.monotonic() + timeout
        done: set[str] = set()
        peak_running = 0
        while len(done) < n and time.monotonic() < deadline:
            peak_running = max(peak_running, len(trainer.running))
            for name in names:
                if name not in done:
                    status = kmock_.objects[RLHFRUNS, NAMESPACE, name].raw.get("status") or {}
                    if status.get("phase") == "Succeeded":
                        done.add(name)
            await asyncio.sleep(0.5)
        wall = time.monotonic() - wall
        # Let the last events land before counting.
        await asyncio.sleep(0.5)
        process_cpu = time.process_time() - process_cpu
        trainer_task.cancel()
        stop.set()
        usage = await asyncio.to_thread(results.get, True, 60)
        await asyncio.to_thread(operator.join, 30)

        latencies = [
            kmock_.job_created[f"{name}-sft-1"] - applied[name]
            for name in names
            if f"{name}-sft-1" in kmock_.job_created
        ]
        tally = kmock_.tally[tally_start:]
        operator_requests = [t for t in tally if t[4] != "test"]
        writes = Counter(
            f"{verb} {plural}{'/' + sub if sub else ''}"
            for verb, plural, sub, _name, agent in tally
            if agent != "test" and verb in ("create", "update", "delete")
        )
        reads = Counter(
            f"{verb} {plural}{'/' + sub if sub else ''}"
            for verb, plural, sub, _name, agent in tally
            if agent != "test" and verb not in ("create", "update", "delete")
        )
        completed = max(1, len(done))
        stage_minutes = max(trainer.running_seconds / 60, 1e-9)
        log_reads = sum(v for k, v in reads.items() if k.endswith("pods/log"))
        status_writes = writes.get("update rlhfruns/status", 0)
        stages = 3 * len(done)
        gaps = trainer.read_gaps()
        return {
            "n": n,
            "rate": rate,
            "stage_seconds": stage_seconds,
            "progress_setting": setting,
            "progress_field": "progress" in StageStatus.model_fields,
            "interval": interval,
            "completed": len(done),
            "wall_s": wall,
            "peak_running_stages": peak_running,
            "running_stage_minutes": stage_minutes,
            "stages_with_progress": len(trainer.progress_seen),
            "stages": stages,
            "latency_median_s": statistics.median(latencies) if latencies else float("nan"),
            "latency_p99_s": percentile(latencies, 0.99) if latencies else float("nan"),
            "requests_per_run": len(operator_requests) / completed,
            "requests_per_stage_minute": len(operator_requests) / stage_minutes,
            "writes_per_run": sum(writes.values()) / completed,
            "writes_per_stage_minute": sum(writes.values()) / stage_minutes,
            "writes": {k: v / completed for k, v in sorted(writes.items())},
            "reads": {k: v / completed for k, v in sorted(reads.items())},
            "log_reads_per_stage_minute": log_reads / stage_minutes,
            "log_reads_per_stage": log_reads / max(1, stages),
            "log_read_gap_min_s": min(gaps) if gaps else None,
            "log_read_gap_median_s": statistics.median(gaps) if gaps else None,
            "status_writes_per_stage_minute": status_writes / stage_minutes,
            "status_writes_per_run": status_writes / completed,
            "all_requests_per_run": len(tally) / completed,
            "operator_cpu_s": usage["cpu_seconds"],
            "operator_cpu_per_run_s": usage["cpu_seconds"] / completed,
            "operator_peak_rss_mib": usage["peak_rss_mib"],
            "emulator_cpu_s": process_cpu,
            "emulator_cpu_per_run_s": process_cpu / completed,
            "emulator_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def report(result: dict[str, Any]) -> None:
    n, interval = result["n"], result["interval"]
    arrivals = f"created at {result['rate']:g}/s" if result["rate"] > 0 else "created all at once"
    print(
        f"\nN={n} ({arrivals}, stages running {result['stage_seconds']:g}s each): "
        f"{result['completed']}/{n} runs Succeeded in {result['wall_s']:.1f}s; "
        f"up to {result['peak_running_stages']} stages running at once, "
        f"{result['running_stage_minutes']:.0f} running-stage-minutes"
    )
    if result["progress_setting"]:
        print(
            f"  progress reading: on, OperatorSettings.{result['progress_setting']}={interval:g}s; "
            f"{result['stages_with_progress']}/{result['stages']} stages showed progress in the status"
        )
    elif result["progress_field"]:
        print("  progress reading: StageStatus has `progress`, OperatorSettings no progress interval (its default)")
    else:
        print(
            "  progress reading: ABSENT in this operator (StageStatus has no `progress`): no pod log is read; "
            "the figures are the operator without it"
        )
    print(
        f"  create -> first PyTorchJob: median {result['latency_median_s'] * 1000:.0f} ms, "
        f"p99 {result['latency_p99_s'] * 1000:.0f} ms"
    )
    print(
        f"  operator requests: {result['requests_per_run']:.1f} per run, "
        f"{result['requests_per_stage_minute']:.2f} per running-stage-minute "
        f"(all requests incl. the simulated training operator: {result['all_requests_per_run']:.1f} per run)"
    )
    print(
        f"  operator writes: {result['writes_per_run']:.2f} per run, "
        f"{result['writes_per_stage_minute']:.2f} per running-stage-minute"
    )
    for kind, count in result["writes"].items():
        print(f"    {kind:34s} {count:5.2f}")
    print("  operator reads per run: " + ", ".join(f"{k} {v:.2f}" for k, v in result["reads"].items()))
    budget = 60 / interval
    print(
        f"  progress cost per running-stage-minute: {result['log_reads_per_stage_minute']:.2f} pod log reads, "
        f"{result['status_writes_per_stage_minute']:.2f} status writes (all of them, phase changes included); "
        f"one each per {interval:g}s interval is {budget:.2f}"
    )
    if result["log_read_gap_min_s"] is not None:
        print(
            f"  pod log reads: {result['log_reads_per_stage']:.2f} per stage of {result['stage_seconds']:g}s "
            f"(one at its start, then one per interval: at most {1 + int(result['stage_seconds'] // interval)}); "
            f"between two reads of one pod: min {result['log_read_gap_min_s']:.1f}s, "
            f"median {result['log_read_gap_median_s']:.1f}s"
        )
        print(
            f"  status writes per run: {result['status_writes_per_run']:.2f} "
            f"(without progress reading: 4, one per phase change)"
        )
    print(
        f"  operator CPU: {result['operator_cpu_s']:.1f} s, {result['operator_cpu_per_run_s'] * 1000:.1f} ms per run "
        f"(its process from the first apply on, kopf included); emulator + simulated training operator: "
        f"{result['emulator_cpu_s']:.1f} s, {result['emulator_cpu_per_run_s'] * 1000:.1f} ms per run"
    )
    print(
        f"  operator peak RSS: {result['operator_peak_rss_mib']:.0f} MiB "
        f"(emulator process: {result['emulator_peak_rss_mib']:.0f} MiB)"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10, 50, 100], metavar="N")
    parser.add_argument("--rate", type=float, default=25.0, help="runs created per second; 0: all at once")
    parser.add_argument("--stage-seconds", type=float, default=60.0, help="how long each stage's pod runs")
    parser.add_argument(
        "--progress-interval", type=float, default=30.0, help="the operator's progress read interval (s)"
    )
    parser.add_argument("--json", action="store_true", help="also print each result as one JSON line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    for name in ("kopf", "aiohttp.access", "rlhf_operator"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for n in args.sizes:
        creating = n / args.rate if args.rate > 0 else 0.0
        timeout = 120 + creating + 3 * args.stage_seconds + 0.2 * n
        result = asyncio.run(
            bench(
                n,
                rate=args.rate,
                stage_seconds=args.stage_seconds,
                interval=args.progress_interval,
                history_limit=20,
                timeout=timeout,
            )
        )
        report(result)
        if args.json:
            print(json.dumps(result, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
