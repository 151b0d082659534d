"""Prometheus metrics of the operator: runs by phase, stage durations, reconcile errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from rlhf_api.status import RunPhase

PHASES: tuple[RunPhase, ...] = ("Pending", "Running", "Succeeded", "Failed", "Suspended")

REGISTRY = CollectorRegistry(auto_describe=True)

RUNS = Gauge(
    "rlhf_runs",
    "RLHFRuns known to the operator, by phase.",
    ["phase"],
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "rlhf_stage_duration_seconds",
    "Wall time of finished stages, first attempt start to completion.",
    ["stage", "outcome"],
    buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, float("inf")),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "rlhf_reconcile_errors_total",
    "Reconcile passes that failed (API errors and the like) and were retried.",
    ["kind"],
    registry=REGISTRY,
)
RECONCILES = Counter("rlhf_reconciles_total", "Reconcile passes.", registry=REGISTRY)
PROGRESS_READS = Counter(
    "rlhf_progress_log_reads_total",
    "Reads of running stages' Master pod logs for progress, by outcome (read, unreadable, no-pod).",
    ["outcome"],
    registry=REGISTRY,
)
API_WRITES = Counter("rlhf_api_writes_total", "Writes sent to the API, by verb.", ["verb"], registry=REGISTRY)

_server_started = False


def serve(port: int) -> None:
    """Expose /metrics on `port` (0 disables); once per process."""
    global _server_started
    if port and not _server_started:
        start_http_server(port, registry=REGISTRY)
        _server_started = True


def set_run_phases(phases: Mapping[Any, RunPhase]) -> None:
    counts = dict.fromkeys(PHASES, 0)
    for phase in phases.values():
        counts[phase] = counts.get(phase, 0) + 1
    for phase, count in counts.items():
        RUNS.labels(phase=phase).set(count)
