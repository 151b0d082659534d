"""Progress events from the Master pod's log (`pods/log`), at a bounded rate per running stage.

The trainer prints `@@rlhf {json}` lines (rlhf_api.progress); the operator reads them with the
`log` subresource, so the training pods need no API token and no endpoint to push to. Per
running stage and interval (RLHF_PROGRESS_INTERVAL_SECONDS, default 30 s): one GET of
`pods/{master}/log?timestamps=true&sinceTime=...&tailLines=N&limitBytes=M` (plus, for launchers
whose Master pod name is not predictable, one LIST by label the first time, then cached). The
line timestamps the kubelet adds are the events' times: speed and ETA do not depend on when the
operator happened to read. The reconcile core (reconcile/progress.py) decides what they mean.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from rlhf_api import progress
from rlhf_api.progress_status import TimedEvent, parse_time
from rlhf_api.status import RLHFRunStatus

from ..api_ref import PODS
from ..launchers import Launcher
from ..observed_job import ObservedJob
from ..pod_result import label_selector, matches
from ..reconcile import ProgressReading, running_jobs
from . import metrics
from .kube_client import ApiError, KubeClient, object_path

logger = logging.getLogger(__name__)
LIMIT_BYTES = 256 * 1024  # one read's most: a runaway log cannot blow the operator's memory
JobKey = tuple[str, str]  # (namespace, job name)


def parse_log(text: str, after: datetime | None) -> tuple[list[TimedEvent], datetime | None]:
    """The progress events of a `timestamps=true` log text printed after `after`, and the time
    of its last line (the next read's sinceTime). Lines without a readable timestamp are skipped."""
    events: list[TimedEvent] = []
    last = after
    for line in text.splitlines():
        stamp, _, rest = line.partition(" ")
        moment = parse_time(stamp)
        if moment is None or (after is not None and moment <= after):
            continue
        last = moment if last is None or moment > last else last
        event = progress.parse(rest)
        if event is not None:
            events.append(TimedEvent(moment, event))
    return events, last


def since_time(moment: datetime) -> str:
    """sinceTime in whole seconds, rounded down: the read may overlap, never miss."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ProgressReader:
    """Reads running stages' Master pod logs, each at most once per interval. In-memory state
    only (the last read, the last line's time, the Master pod's name): after a restart the
    stage's lastProgressTime in the status is where reading resumes."""

    def __init__(
        self,
        client: KubeClient,
        interval: float,
        tail_lines: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.interval = interval
        self.tail_lines = tail_lines
        self.clock = clock
        self._read_at: dict[JobKey, float] = {}
        self._after: dict[JobKey, datetime] = {}
        self._pods: dict[JobKey, str] = {}

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    async def read_due(
        self, namespace: str, status: RLHFRunStatus, jobs: Mapping[str, ObservedJob], launcher: Launcher
    ) -> tuple[dict[str, ProgressReading], float | None]:
        """Readings of the run's running stages whose interval is up, and the seconds until the
        next one is (None: nothing runs). Never raises: progress must not fail a pass."""
        if not self.enabled:
            return {}, None
        if not status.stages:
            return {}, None
        readings: dict[str, ProgressReading] = {}
        waits: list[float] = []
        stages = {s.job_name: s for s in status.stages}
        running = running_jobs(status, jobs)
        self.forget(namespace, [n for n in stages if n and n not in running])
        for name in running:
            key = (namespace, name)
            last = self._read_at.get(key)
            wait = 0.0 if last is None else self.interval - (self.clock() - last)
            if wait > 0:
                waits.append(wait)
                continue
            stage = stages.get(name)
            known = parse_time(stage.progress.last_progress_time) if stage and stage.progress else None
            readings[name] = await self._read(key, launcher, known)
            self._read_at[key] = self.clock()
            waits.append(self.interval)
        return readings, (min(waits) if waits else None)

    def forget(self, namespace: str, jobs: list[str]) -> None:
        """Drop what is kept about these jobs (their stage ended, or their run was deleted)."""
        for name in jobs:
            for table in (self._read_at, self._after, self._pods):
                table.pop((namespace, name), None)

    async def _read(self, key: JobKey, launcher: Launcher, known: datetime | None) -> ProgressReading:
        namespace, job = key
        after = self._after.get(key) or known
        try:
            pod = await self._master_pod(key, launcher)
            if pod is None:
                metrics.PROGRESS_READS.labels(outcome="no-pod").inc()
                return ProgressReading(complete=False)
            params: dict[str, Any] = {
                "container": launcher.result_container,
                "timestamps": "true",
                "tailLines": str(self.tail_lines),
                "limitBytes": str(LIMIT_BYTES),
            }
            if after is not None:
                params["sinceTime"] = since_time(after)
            text = await self.client.get_text(object_path(PODS, namespace, pod, "log"), params)
        except ApiError as error:
            # 400: the container is not running yet (or any more); 404: the pod is gone. Either
            # way the events are unknown, so the reading is incomplete (no hang concluded).
            if error.status == 404:
                self._pods.pop(key, None)
            metrics.PROGRESS_READS.labels(outcome="unreadable").inc()
            logger.debug("progress of %s/%s not read: %s", namespace, job, error)
            return ProgressReading(complete=False)
        events, last = parse_log(text, after)
        if last is not None:
            self._after[key] = last
        metrics.PROGRESS_READS.labels(outcome="read").inc()
        return ProgressReading(tuple(events), complete=True)

    async def _master_pod(self, key: JobKey, launcher: Launcher) -> str | None:
        namespace, job = key
        name = launcher.master_pod_name(job) or self._pods.get(key)
        if name is not None:
            return name
        selector = launcher.master_pod_selector(job)
        pods = await self.client.list(PODS, namespace, label_selector(selector))
        found = next(
            (
                str(meta["name"])
                for meta in ((p.get("metadata") or {}) for p in pods)
                if meta.get("name") and matches(meta.get("labels") or {}, selector)  # checked again, as pod_result
            ),
            None,
        )
        if found is not None:
            self._pods[key] = found
        return found
