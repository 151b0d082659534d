"""Progress events from the Master pod's log (`pods/log`), at a bounded rate per running stage.

The trainer prints `@@rlhf {json}` lines (rlhf_api.progress); the operator reads them with the
`log` subresource, so the training pods need no API token and no endpoint to push to. Per
running stage and interval (RLHF_PROGRESS_INTERVAL_SECONDS, default 30 s): one GET of
`pods/{master}/log?timestamps=true&sinceTime=...&tailLines=N&limitBytes=M` (plus, for launchers
whose Master pod name is not predictable, one LIST by label the first time, then cached). The
line timestamps the kubelet adds are the events' times: speed and ETA do not depend on when the
operator happened to read. The reconcile core (reconcile/progress.py) decides what they mean.

A burst cannot pin the reader: reading starts at the last line consumed (log_window.py), and a
read that stops at its byte limit is followed by reads of the newest lines (fewer each time,
down to the last line alone), so each interval ends at the log's end; what lies between is
skipped and said. A reading that could not reach the end is incomplete: the hang deadline
never counts the reader's own lag. What a reading dropped (lines that are not usable progress,
a skipped burst, a step above its total) is said once per job (a Warning event).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from rlhf_api.progress_status import parse_time
from rlhf_api.status import RLHFRunStatus

from ..api_ref import PODS
from ..launchers import Launcher
from ..log_window import Position, Taken, position_of, since_time, step_above_total, take
from ..observed_job import ObservedJob
from ..pod_result import label_selector, matches
from ..reconcile import ProgressReading, running_jobs
from . import metrics
from .kube_client import ApiError, KubeClient, object_path

logger = logging.getLogger(__name__)
LIMIT_BYTES = 256 * 1024  # one read's most: a runaway log cannot blow the operator's memory
MAX_READS = 4  # per stage and interval: the first, then newer tails (a burst larger than one read)
JobKey = tuple[str, str]  # (namespace, job name)


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
        self._after: dict[JobKey, Position] = {}
        self._pods: dict[JobKey, str] = {}
        self._totals: dict[JobKey, int] = {}  # the stage's total steps, as last printed
        self._warned: set[JobKey] = set()  # jobs whose dropped lines were said (once per job)

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
            if stage and stage.progress and stage.progress.total_steps and key not in self._totals:
                self._totals[key] = stage.progress.total_steps
            readings[name] = await self._read(key, launcher, known)
            self._read_at[key] = self.clock()
            waits.append(self.interval)
        return readings, (min(waits) if waits else None)

    def forget(self, namespace: str, jobs: list[str]) -> None:
        """Drop what is kept about these jobs (their stage ended, or their run was deleted)."""
        for name in jobs:
            for table in (self._read_at, self._after, self._pods, self._totals):
                table.pop((namespace, name), None)
            self._warned.discard((namespace, name))

    async def _read(self, key: JobKey, launcher: Launcher, known: datetime | None) -> ProgressReading:
        namespace, job = key
        after = self._after.get(key) or position_of(known)
        try:
            pod = await self._master_pod(key, launcher)
            if pod is None:
                metrics.PROGRESS_READS.labels(outcome="no-pod").inc()
                return ProgressReading(complete=False)
            taken = await self._read_to_end(namespace, pod, launcher.result_container, after)
        except ApiError as error:
            # 400: the container is not running yet (or any more); 404: the pod is gone. Either
            # way the events are unknown, so the reading is incomplete (no hang concluded).
            if error.status == 404:
                self._pods.pop(key, None)
            metrics.PROGRESS_READS.labels(outcome="unreadable").inc()
            logger.debug("progress of %s/%s not read: %s", namespace, job, error)
            return ProgressReading(complete=False)
        except Exception:  # a defect here must not freeze the run's passes (suspend, deletion, status)
            metrics.PROGRESS_READS.labels(outcome="unreadable").inc()
            logger.exception("progress of %s/%s not read", namespace, job)
            return ProgressReading(complete=False)
        if taken.position is not None:
            self._after[key] = taken.position
        flagged, total = step_above_total(taken.events, self._totals.get(key))
        if total is not None:
            self._totals[key] = total
        dropped = _distinct([*taken.dropped, *flagged])
        said: tuple[str, ...] = ()
        if dropped and key not in self._warned:
            self._warned.add(key)
            said = tuple(dropped)
        if dropped:
            logger.info("progress of %s/%s: dropped %s", namespace, job, "; ".join(dropped[:5]))
        metrics.PROGRESS_READS.labels(outcome="read").inc()
        return ProgressReading(tuple(taken.events), complete=True, dropped=said)

    async def _read_to_end(self, namespace: str, pod: str, container: str, after: Position | None) -> Taken:
        """The lines since `after` up to the log's end: one read, or when it stops at its byte
        limit, reads of fewer and fewer of the newest lines, the last of the newest line alone
        (so the end is always reached: a reading is complete)."""
        found = Taken(position=after)
        tail = self.tail_lines
        for attempt in range(MAX_READS):
            last = tail == 1 or attempt == MAX_READS - 1
            tail = 1 if attempt == MAX_READS - 1 else tail
            params: dict[str, Any] = {
                "container": container,
                "timestamps": "true",
                "tailLines": str(tail),
                "limitBytes": str(LIMIT_BYTES),
            }
            if found.position is not None:
                params["sinceTime"] = since_time(found.position)
            text = await self.client.get_text(object_path(PODS, namespace, pod, "log"), params)
            # errors="replace" can only make the text longer than the bytes read
            full = len(text.encode()) >= LIMIT_BYTES
            taken = take(text, found.position, full, skip_cut=last)
            if taken.gap is not None:
                found.dropped.append(f"{taken.gap} skipped: a burst larger than one read of {LIMIT_BYTES // 1024} KiB")
            found.events += taken.events
            found.dropped += taken.dropped
            found.position = taken.position or found.position
            found.cut = taken.cut
            if not full or last:
                break
            tail = max(1, min(tail, text.count("\n")) // 2)
        return found

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


def _distinct(items: list[str]) -> list[str]:
    """Each description once, in order, at most 10 (a flood of one kind says it once)."""
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
        if len(seen) >= 10:
            break
    return list(seen)
