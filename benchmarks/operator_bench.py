"""Operator load benchmark: N concurrent RLHFRuns (sft -> reward -> ppo) driven to completion.

The real kopf operator runs in its own process against kmock's emulator (tests/operator/emulator.py)
in the main thread, where a simulated training operator walks every job through Created,
Running, Master pod with its result, Succeeded. Reported per N:
- create -> first PyTorchJob latency (median, p99), from the emulator's own clock;
- API requests and writes per completed run, the operator's broken down by verb and kind;
- the operator's CPU seconds per completed run and its peak RSS: the operator runs in its own
  process (a thread would share the GIL with the emulator and inflate both latency and CPU),
  beside the emulator process' CPU (emulator + simulated training operator).
kmock re-scans its request history on every request, so the history is bounded here
(Emulator.history_limit) to keep the emulator's cost from dominating.

    python benchmarks/operator_bench.py            # N = 10, 50, 100
    python benchmarks/operator_bench.py 10 200     # other sizes
"""

from __future__ import annotations

import asyncio
import copy
import logging
import multiprocessing
import resource
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import kopf
from kmock import Server, action

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rlhf_api.result import StageResult  # noqa: E402
from rlhf_operator.controller import handlers  # noqa: E402  (registers the handlers)
from rlhf_operator.controller.kube_client import Connection  # noqa: E402
from rlhf_operator.settings import OperatorSettings  # noqa: E402

from tests.operator.emulator import PYTORCHJOBS, RLHFRUNS, Emulator  # noqa: E402

NAMESPACE = "bench"
CONCURRENCY = 16
_server: dict[str, str] = {}


@kopf.on.login()
def _login(**_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=_server["url"], insecure=True)


@attrs.define(kw_only=True)
class BenchEmulator(Emulator):
    """Notes when each PyTorchJob was created (the latency's end point)."""

    job_created: dict[str, float] = attrs.field(factory=dict, init=False)

    async def _handle(self, request: Any) -> Any:
        if (
            request.action == action.CREATE
            and request.resource is not None
            and request.resource.plural == "pytorchjobs"
        ):
            name = (request.data or {}).get("metadata", {}).get("name")
            if name:
                self.job_created.setdefault(name, time.monotonic())
        return await super()._handle(request)


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


def operator_main(url: str, ready: Any, go: Any, stop: Any, results: Any) -> None:
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
    memo = kopf.Memo(settings=OperatorSettings(metrics_port=0), tuning=tuning, connection=Connection(url, {}))
    asyncio.run(kopf.operator(clusterwide=True, standalone=True, stop_flag=stop_flag, ready_flag=ready_flag, memo=memo))
    results.put(
        {
            "cpu_seconds": cpu_seconds() - (baseline[0] if baseline else 0.0),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


class TrainingOperator:
    """Plays the Kubeflow training operator: every new job runs and succeeds."""

    def __init__(self, kmock: BenchEmulator) -> None:
        self.kmock = kmock
        self.started: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def call(self, method: str, path: str, body: Any, content_type: str = "application/merge-patch+json") -> None:
        async with self.kmock.request(method, path, json=body, headers={"Content-Type": content_type}) as resp:
            await resp.read()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status}")

    async def run_job(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        labels = job["metadata"]["labels"]
        stage, run = labels["rlhf.dev/stage"], labels["rlhf.dev/run"]
        status_path = f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs/{name}/status"
        conditions: list[dict[str, str]] = []
        for kind in ("Created", "Running"):
            conditions = [dict(c, status="True" if c["type"] == "Created" else "False") for c in conditions]
            conditions.append({"type": kind, "status": "True", "reason": f"Job{kind}"})
            await self.call("PATCH", status_path, {"status": {"conditions": conditions}})
        output = f"/workspace/{run}/{stage}"
        result = StageResult(
            stage=stage, status="succeeded", output_path=output, merged_path=f"{output}/merged", metrics={"loss": 0.5}
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-master-0",
                "namespace": NAMESPACE,
                "labels": {"training.kubeflow.org/job-name": name, "training.kubeflow.org/replica-type": "master"},
            },
            "status": {
                "containerStatuses": [
                    {
                        "name": "pytorch",
                        "state": {"terminated": {"exitCode": 0, "message": result.termination_message()}},
                    }
                ]
            },
        }
        await self.call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod, "application/json")
        conditions = [dict(c, status="False") if c["type"] == "Running" else c for c in conditions]
        conditions.append({"type": "Succeeded", "status": "True", "reason": "JobSucceeded"})
        await self.call("PATCH", status_path, {"status": {"conditions": conditions}})

    async def loop(self) -> None:
        while True:
            for job in self.kmock.live(PYTORCHJOBS, NAMESPACE):
                name = job["metadata"]["name"]
                if name not in self.started:
                    self.started.add(name)
                    task = asyncio.create_task(self.run_job(job))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
            await asyncio.sleep(0.01)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench(n: int, history_limit: int, timeout: float) -> dict[str, Any]:
    async with BenchEmulator(history_limit=history_limit) as kmock, Server(kmock):
        kmock.register()
        kmock.objects["v1/namespaces", None, NAMESPACE] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE},
        }
        url = str(kmock.url).rstrip("/")
        _server["url"] = url
        context = multiprocessing.get_context("spawn")
        ready, go, stop, results = context.Event(), context.Event(), context.Event(), context.Queue()
        operator = context.Process(target=operator_main, args=(url, ready, go, stop, results), name="operator")
        operator.start()
        await asyncio.to_thread(ready.wait, 60)
        # kopf is "ready" before its watches are up: wait for them, so latency excludes startup.
        watched = lambda: {t[1] for t in kmock.tally if t[0] == "watch" and t[4] == "kopf"}  # noqa: E731
        while not {"rlhfruns", "pytorchjobs"} <= watched():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        trainer = TrainingOperator(kmock)
        trainer_task = asyncio.create_task(trainer.loop())
        tally_start = len(kmock.tally)
        process_cpu = time.process_time()
        go.set()
        await asyncio.sleep(0.05)  # the operator notes its CPU baseline

        applied: dict[str, float] = {}

        async def apply(name: str) -> None:
            applied[name] = time.monotonic()
            async with kmock.request(
                "POST", f"/apis/rlhf.dev/v1alpha1/namespaces/{NAMESPACE}/rlhfruns", json=copy.deepcopy(run_body(name))
            ) as resp:
                await resp.read()

        names = [f"run-{i:04d}" for i in range(n)]
        wall = time.monotonic()
        await asyncio.gather(*(apply(name) for name in names))
        deadline = time.monotonic() + timeout
        done: set[str] = set()
        while len(done) < n and time.monotonic() < deadline:
            for name in names:
                if name not in done:
                    status = kmock.objects[RLHFRUNS, NAMESPACE, name].raw.get("status") or {}
                    if status.get("phase") == "Succeeded":
                        done.add(name)
            await asyncio.sleep(0.05)
        wall = time.monotonic() - wall
        # Let the last events land before counting.
        await asyncio.sleep(0.5)
        process_cpu = time.process_time() - process_cpu
        trainer_task.cancel()
        stop.set()
        usage = await asyncio.to_thread(results.get, True, 60)
        await asyncio.to_thread(operator.join, 30)

        latencies = [
            kmock.job_created[f"{name}-sft-1"] - applied[name] for name in names if f"{name}-sft-1" in kmock.job_created
        ]
        tally = kmock.tally[tally_start:]
        operator_requests = [t for t in tally if t[4] != "test"]
        writes = Counter(
            f"{verb} {plural}{'/' + sub if sub else ''}"
            for verb, plural, sub, _name, agent in tally
            if agent != "test" and verb in ("create", "update", "delete")
        )
        reads = Counter(
            f"{verb} {plural}"
            for verb, plural, _sub, _name, agent in tally
            if agent != "test" and verb not in ("create", "update", "delete")
        )
        completed = max(1, len(done))
        return {
            "n": n,
            "completed": len(done),
            "wall_s": wall,
            "latency_median_s": statistics.median(latencies) if latencies else float("nan"),
            "latency_p99_s": percentile(latencies, 0.99) if latencies else float("nan"),
            "requests_per_run": len(operator_requests) / completed,
            "writes_per_run": sum(writes.values()) / completed,
            "writes": {k: v / completed for k, v in sorted(writes.items())},
            "reads": {k: v / completed for k, v in sorted(reads.items())},
            "all_requests_per_run": len(tally) / completed,
            "operator_cpu_per_run_s": usage["cpu_seconds"] / completed,
            "operator_peak_rss_mib": usage["peak_rss_mib"],
            "emulator_cpu_per_run_s": process_cpu / completed,
            "emulator_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def report(result: dict[str, Any]) -> None:
    print(f"\nN={result['n']}: {result['completed']}/{result['n']} runs Succeeded in {result['wall_s']:.1f}s")
    print(
        f"  create -> first PyTorchJob: median {result['latency_median_s'] * 1000:.0f} ms, "
        f"p99 {result['latency_p99_s'] * 1000:.0f} ms"
    )
    print(
        f"  operator requests per run: {result['requests_per_run']:.1f} "
        f"(all requests incl. the simulated training operator: {result['all_requests_per_run']:.1f})"
    )
    print(f"  operator writes per run: {result['writes_per_run']:.2f}")
    for kind, count in result["writes"].items():
        print(f"    {kind:34s} {count:5.2f}")
    print("  operator reads per run: " + ", ".join(f"{k} {v:.2f}" for k, v in result["reads"].items()))
    print(
        f"  operator CPU per run: {result['operator_cpu_per_run_s'] * 1000:.1f} ms (its process from the first "
        f"apply on, kopf included; emulator + simulated training operator: "
        f"{result['emulator_cpu_per_run_s'] * 1000:.1f} ms)"
    )
    print(
        f"  operator peak RSS: {result['operator_peak_rss_mib']:.0f} MiB "
        f"(emulator process: {result['emulator_peak_rss_mib']:.0f} MiB)"
    )


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [10, 50, 100]
    logging.basicConfig(level=logging.ERROR)
    for name in ("kopf", "aiohttp.access", "rlhf_operator"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for n in sizes:
        result = asyncio.run(bench(n, history_limit=20, timeout=60 + 3 * n))
        report(result)


if __name__ == "__main__":
    main(sys.argv[1:])
