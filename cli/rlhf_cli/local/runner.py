"""`rlhf run`: the same state machine as the operator, with processes instead of pods.

Each pass calls the pure `reconcile` with the run, the stored status (`report.json`, which has
exactly the shape of the RLHFRun status on a cluster) and the stage processes as observed jobs;
the local backend applies the actions. So retries with backoff, suspend and resume, phases,
conditions, reasons and events behave as on a cluster:
- a stage process that dies (killed, out of memory) is a failed attempt, retried after
  retryBackoffSeconds; the trainer resumes from its checkpoint;
- Ctrl-C (or SIGTERM) suspends the run: the stage gets SIGTERM, checkpoints the current step and
  exits; running the same command again resumes it;
- a finished stage is not run again while its config is the same; after a spec edit, the stages
  whose trainer config changed (and those trained from them) run again from the start (rerun.py);
  running a failed run's command again gives its failed stage one more attempt.
Paths in the spec resolve against the work directory as they do against the volume on a cluster.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rlhf_api import layout, reasons
from rlhf_api.spec import RLHFRun
from rlhf_api.status import RLHFRunStatus
from rlhf_api.validation import RunInvalid, parse_run
from rlhf_operator.estimate import fit_warnings
from rlhf_operator.plan import plan, run_root
from rlhf_operator.reconcile import Outcome, PostEvent, event_body, load_status, reconcile
from rlhf_operator.settings import OperatorSettings

from ..report.build import write_report_at_end
from .backend import LocalBackend
from .display import Display, EventNote, PlainDisplay
from .launcher import LocalLauncher
from .rerun import rerun_edited, rerun_line

REPORT = "report.json"
# How often a pass runs while nothing else happens (a timed retry is woken up exactly).
_IDLE_PASS_SECONDS = 30.0
_END_GRACE_SECONDS = 30.0


class TrainerMissing(RuntimeError):
    pass


def check_trainer() -> None:
    """Fail with a clear message when the training extras (or the stage programs) are absent."""
    for module in ("torch", "transformers", "trl", "peft"):
        if importlib.util.find_spec(module) is None:
            raise TrainerMissing(
                f"rlhf run needs the training extras ({module} is not installed): "
                "pip install torch==2.13.0 && pip install 'rlhf-operator[train]'"
            )
    if importlib.util.find_spec("rlhf_trainer.stages") is None:
        raise TrainerMissing("rlhf run: the trainer's stage programs (rlhf_trainer.stages) are not installed")


def retry_failed(status_raw: dict[str, Any]) -> dict[str, Any]:
    """A failed run's status with its failed stage due for one more attempt now (pure)."""
    status = load_status(status_raw)
    if status.phase != "Failed":
        return status_raw
    for stage in status.stages:
        if stage.phase == "Failed":
            stage.phase, stage.retry_after, stage.completion_time = "Retrying", None, None
            status.phase = "Running"
    return status.to_file_dict()


class LocalRun:
    def __init__(self, run: RLHFRun, workdir: Path, nproc: int | None = None, display: Display | None = None) -> None:
        self.run = run
        self.workdir = workdir.resolve()
        self.root = Path(run_root(run, str(self.workdir)))
        self.display = display or PlainDisplay()
        self.launcher = LocalLauncher(nproc)
        self.backend = LocalBackend(self.root, self.launcher, self.display)
        self.settings = OperatorSettings(metrics_port=0)
        spec = run.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        spec.pop("queueName", None)  # no Kueue on a laptop: jobs start when the state machine says
        self.body: dict[str, Any] = {
            "apiVersion": run.api_version,
            "kind": run.kind,
            "metadata": {"name": run.metadata.name, "uid": f"local-{run.metadata.name}", "generation": 1},
            "spec": spec,
            "status": {},
        }

    @property
    def report_path(self) -> Path:
        return self.root / REPORT

    def _read_report(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.report_path.read_text())
        except (OSError, ValueError):
            return {}
        return raw if isinstance(raw, dict) else {}

    def _write_report(self, status: dict[str, Any]) -> None:
        tmp = self.report_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2) + "\n")
        os.replace(tmp, self.report_path)

    def _pass(self) -> Outcome:
        """One reconcile pass: observe the processes, decide, apply, store the status."""
        outcome = reconcile(
            self.body,
            self.backend.observe(),
            datetime.now(UTC),
            self.settings,
            launcher=self.launcher,
            mount_root=str(self.workdir),
            fit_check=fit_warnings,
            progress=self.backend.readings(),
        )
        self.backend.apply(outcome.actions)
        if outcome.status_patch:
            self.body["status"] = outcome.new_status
            self._write_report(outcome.new_status)
        events: list[EventNote] = [
            (str(a.body["type"]), str(a.body["reason"]), str(a.body["message"]))
            for a in outcome.actions
            if isinstance(a, PostEvent)
        ]
        if events or outcome.status_patch:
            self.display.transition(outcome.status, events)
        return outcome

    def execute(self) -> RLHFRunStatus:
        self.root.mkdir(parents=True, exist_ok=True)
        self.backend.load()
        self.body["status"] = self._rerun_edited(retry_failed(self._read_report()))
        self.display.transition(load_status(self.body["status"]), [])
        try:
            with _sigterm_as_interrupt():
                outcome = self._drive()
        except KeyboardInterrupt:
            outcome = self._suspend()
        write_report_at_end(self.root, outcome.status)
        self.display.finish(outcome.status, self.root)
        return outcome.status

    def _rerun_edited(self, status: dict[str, Any]) -> dict[str, Any]:
        """Stages whose trainer config changed since they ran start again (rerun.py)."""
        try:
            plans = plan(parse_run(self.body), str(self.workdir))
        except RunInvalid:
            return status  # the pass reports it
        ran_with: dict[str, dict[str, Any]] = {p.name: _read_config(self.root / p.name / layout.CONFIG) for p in plans}
        status, reruns = rerun_edited(status, plans, ran_with)
        if not reruns:
            return status
        for stage, _fields in reruns:
            self.backend.forget_stage(stage)
        message = "; ".join(rerun_line(stage, fields) for stage, fields in reruns)
        hashes = [p.config.identity.config_hash for p in plans if p.config and p.config.identity]
        key = "config-changed-" + "-".join(hashes)
        now = datetime.now(UTC)
        event = event_body(self.body["metadata"], key, "Warning", reasons.STAGE_CONFIG_CHANGED, message, now)
        self.backend.apply([PostEvent(event)])
        self.display.transition(load_status(status), [("Warning", reasons.STAGE_CONFIG_CHANGED, message)])
        return status

    def _drive(self) -> Outcome:
        while True:
            outcome = self._pass()
            phase = outcome.status.phase
            if phase in ("Succeeded", "Failed") or (phase == "Suspended" and not self.backend.running()):
                self._wait_for_ended()
                return outcome
            if outcome.requeue_after is not None:
                self.backend.pump(outcome.requeue_after)
            elif self.backend.running():
                self.backend.pump(_IDLE_PASS_SECONDS)
            elif not outcome.actions and not outcome.status_patch:
                return outcome  # nothing runs and nothing is due: another pass would change nothing

    def _wait_for_ended(self) -> None:
        """Processes of an attempt the last pass ended (a guard's stop) checkpoint and exit;
        killed when they take longer than a pod's default grace period."""
        deadline = time.monotonic() + _END_GRACE_SECONDS
        while self.backend.running() and time.monotonic() < deadline:
            self.backend.pump(max(0.0, deadline - time.monotonic()))
        if self.backend.running():
            self.backend.stop_all(kill=True)
            while self.backend.running():
                self.backend.pump(None)

    def _suspend(self) -> Outcome:
        """Ctrl-C: spec.suspend, as `kubectl patch` would set it; the stage checkpoints and stops.
        A second Ctrl-C kills the stage process (it resumes from its last periodic checkpoint)."""
        self.body["spec"]["suspend"] = True
        outcome = self._pass()
        while self.backend.running():
            try:
                self.backend.pump(None)
            except KeyboardInterrupt:
                self.backend.stop_all(kill=True)
        outcome = self._pass()
        return outcome


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM to `rlhf run` (a CI timeout, a closing terminal) suspends like Ctrl-C."""

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt) if _in_main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def exit_code(status: RLHFRunStatus) -> int:
    """0 succeeded, 130 suspended (as after Ctrl-C), 1 otherwise."""
    return {"Succeeded": 0, "Suspended": 130}.get(status.phase, 1)
