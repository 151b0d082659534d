"""The local backend: applies a reconcile pass's actions on this machine and reports what it sees.

Where the cluster has the API server, this has the run's directory: the volume is a folder, a
ConfigMap is the stage's config.yaml, a stage job is a process (local/launcher.py) whose record
is kept in `jobs.json`, events go to `events.jsonl` and the display, and a job's result is the
stage's result.json (on a cluster, the Master pod's termination message).

Processes start in their own session: Ctrl-C reaches `rlhf run`, which suspends the run through
the state machine; the stage then gets SIGTERM, checkpoints and exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlhf_api import layout, progress
from rlhf_api.files import write_text_atomic
from rlhf_api.naming import STAGE_LABEL
from rlhf_api.progress_status import TimedEvent
from rlhf_api.result import read_result
from rlhf_operator.api_ref import CONFIGMAPS, PVCS
from rlhf_operator.manifests.pod import CONFIG_FILE
from rlhf_operator.observed_job import ObservedJob
from rlhf_operator.reconcile import Action, Create, EndJob, PatchJob, PostEvent, ProgressReading, ReleaseJob

from .display import Display
from .launcher import LOCAL_JOB_API, LocalLauncher

JOBS_FILE = "jobs.json"
EVENTS_FILE = "events.jsonl"
STAGE_LOG = "stage.log"
TERMINATION_LOG = "termination-log"
_TAIL_LINES = 20


@dataclass
class _Process:
    popen: subprocess.Popen[str]
    started: float
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))
    suspending: bool = False


# What the reader threads report: (job name, a line of output) or (job name, None) at the end.
Report = tuple[str, str | None]


class LocalBackend:
    def __init__(self, root: Path, launcher: LocalLauncher, display: Display) -> None:
        self.root = root
        self.launcher = launcher
        self.display = display
        self.jobs: dict[str, dict[str, Any]] = {}  # job records (what a cluster's API would hold)
        self.processes: dict[str, _Process] = {}
        self.reports: queue.Queue[Report] = queue.Queue()
        self.events: dict[str, list[TimedEvent]] = {}  # progress events since the last pass, by job

    # --- the job records ---------------------------------------------------------------------

    def load(self) -> None:
        """Job records of earlier `rlhf run`s. A record still marked Running belongs to a process
        this command does not own (the previous `rlhf run` was killed): it is stopped and
        counted as a failed attempt, like a pod lost with its node."""
        path = self.root / JOBS_FILE
        try:
            self.jobs = json.loads(path.read_text())
        except (OSError, ValueError):
            self.jobs = {}
        for name, record in self.jobs.items():
            status = record.setdefault("status", {})
            if status.get("state") == "Running":
                _stop_orphan(status.get("pid"))
                status.update(state="Failed", message="interrupted: rlhf run exited while the stage was running")
                status.pop("pid", None)
                self.display.output(str(record["spec"]["stage"]), f"{name}: {status['message']}")
        self._save()

    def forget_stage(self, stage: str) -> None:
        """Drop a stage's job records: it runs again from attempt 1 (a spec edit, local/rerun.py)."""
        self.jobs = {name: r for name, r in self.jobs.items() if str(r["spec"]["stage"]) != stage}
        self._save()

    def _save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json(self.root / JOBS_FILE, self.jobs)

    def observe(self) -> dict[str, ObservedJob]:
        """Every stage job as the state machine wants to see it, results read for finished ones."""
        observed = {}
        for name, record in self.jobs.items():
            job = self.launcher.observe(record)
            if job.state == "Succeeded" or (job.state == "Failed" and record["status"].get("resultFresh")):
                result = read_result(layout.result_path(str(record["spec"]["outputDir"])))
                error = None if result is not None else "result.json is missing or unreadable"
                job = dataclasses.replace(job, result=result, result_error=error)
            observed[name] = job
        return observed

    def running(self) -> bool:
        return bool(self.processes)

    # --- applying actions --------------------------------------------------------------------

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Create):
                self._create(action)
            elif isinstance(action, PatchJob):
                self._patch(action.name, action.patch)
            elif isinstance(action, PostEvent):
                self._event(action.body)
            elif isinstance(action, ReleaseJob):
                pass  # local job records have no finalizers
            elif isinstance(action, EndJob):
                self._end(action.name, action.hung)
        self._save()

    def _create(self, action: Create) -> None:
        body = action.body
        if action.api == PVCS:
            self.root.mkdir(parents=True, exist_ok=True)
        elif action.api == CONFIGMAPS:
            stage = body["metadata"]["labels"][STAGE_LABEL]
            stage_dir = self.root / stage
            stage_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(stage_dir / layout.CONFIG, body["data"][CONFIG_FILE])
        elif action.api == LOCAL_JOB_API:
            if action.name in self.jobs:
                return  # create-if-absent, as on a cluster
            record = {"metadata": body["metadata"], "spec": dict(body["spec"]), "status": {"state": "Pending"}}
            self.jobs[action.name] = record
            if record["spec"]["suspend"]:
                record["status"]["state"] = "Suspended"
            else:
                self._start(action.name)

    def _patch(self, name: str, patch: dict[str, Any]) -> None:
        record = self.jobs.get(name)
        if record is None:
            return
        suspend = bool(patch.get("spec", {}).get("suspend"))
        record["spec"]["suspend"] = suspend
        process = self.processes.get(name)
        if suspend and process is not None:
            self.stop(name)
        elif not suspend and process is None and record["status"].get("state") in ("Suspended", "Pending"):
            self._start(name)  # resumed: the trainer picks up its checkpoint

    def _event(self, body: dict[str, Any]) -> None:
        with open(self.root / EVENTS_FILE, "a") as f:
            f.write(json.dumps(body, separators=(",", ":")) + "\n")

    def _end(self, name: str, hung: bool) -> None:
        """A stalled or guard-stopped attempt: its record says so at once (the pass that ended it
        has moved on), and the process is stopped (killed when it may be hung)."""
        record = self.jobs.get(name)
        if record is None or record["status"].get("state") != "Running":
            return
        record["status"] = {"state": "Failed", "message": "ended by rlhf run (stalled or stopped by a guard)"}
        record["status"]["ended"] = True
        self.stop(name, kill=hung)

    def readings(self) -> dict[str, ProgressReading]:
        """The progress events of the running stages since the last call (the same input the
        operator gets from the Master pod's log), for the guards and the hang deadline."""
        readings = {name: ProgressReading(tuple(self.events.pop(name, ()))) for name in self.processes}
        self.events.clear()
        return readings

    # --- processes ---------------------------------------------------------------------------

    def _start(self, name: str) -> None:
        record = self.jobs[name]
        spec = record["spec"]
        out = Path(spec["outputDir"])
        out.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, RLHF_TERMINATION_LOG=str(out / TERMINATION_LOG), PYTHONUNBUFFERED="1")
        env.update(spec.get("env") or {})
        log = open(out / STAGE_LOG, "a")  # noqa: SIM115  (closed by the reader thread)
        popen = subprocess.Popen(
            spec["command"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.processes[name] = _Process(popen, time.time())
        record["status"] = {"state": "Running", "pid": popen.pid, "startedAt": _now()}
        threading.Thread(target=self._read, args=(name, popen, log), daemon=True, name=f"read-{name}").start()
        self._save()

    def _read(self, name: str, popen: subprocess.Popen[str], log: Any) -> None:
        assert popen.stdout is not None
        with log:
            for line in popen.stdout:
                log.write(line)
                log.flush()
                self.reports.put((name, line))
        popen.wait()
        self.reports.put((name, None))

    def stop(self, name: str, kill: bool = False) -> None:
        """SIGTERM (the stage checkpoints and exits) or SIGKILL to the stage's process group."""
        process = self.processes.get(name)
        if process is None:
            return
        process.suspending = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, signal.SIGKILL if kill else signal.SIGTERM)

    def pump(self, timeout: float | None) -> bool:
        """Forward stage output to the display until a process ends (True) or `timeout` passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                name, line = self.reports.get(timeout=remaining)
            except queue.Empty:
                return False
            stage = str(self.jobs[name]["spec"]["stage"])
            if line is None:
                self._ended(name)
                return True
            event = progress.parse(line)
            if event is not None:
                self.events.setdefault(name, []).append(TimedEvent(datetime.now(UTC), event))
                self.display.progress(stage, event)
            elif line.strip():
                self.processes[name].tail.append(line.rstrip())
                self.display.output(stage, line.rstrip())

    def _ended(self, name: str) -> None:
        process = self.processes.pop(name)
        record = self.jobs[name]
        code = process.popen.returncode
        status: dict[str, Any] = {"state": "Failed", "exitCode": code, "startedAt": record["status"].get("startedAt")}
        result = read_result(layout.result_path(str(record["spec"]["outputDir"])))
        fresh = result is not None and _written_after(record["spec"]["outputDir"], process.started)
        if record["status"].get("ended"):
            status.update(state="Failed", message=record["status"]["message"], ended=True)
        elif process.suspending and record["spec"]["suspend"]:
            status["state"] = "Suspended"
        elif code == 0:
            status["state"] = "Succeeded"
        elif fresh and result is not None and result.message:
            status["message"], status["resultFresh"] = result.message, True
        else:
            last = process.tail[-1] if process.tail else "no output"
            status["message"] = f"exit code {code}: {last}" if code >= 0 else f"killed by signal {-code}"
        record["status"] = {k: v for k, v in status.items() if v is not None}
        self._save()

    def stop_all(self, kill: bool = False) -> None:
        for name in list(self.processes):
            self.stop(name, kill)


def _written_after(output_dir: str, started: float) -> bool:
    try:
        return os.path.getmtime(layout.result_path(output_dir)) >= started - 1
    except OSError:
        return False


def _stop_orphan(pid: Any) -> None:
    """Stop a stage process an earlier `rlhf run` left behind (only if it is one of ours)."""
    if not isinstance(pid, int):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"rlhf_trainer" in cmdline:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
