"""Progress, guards, the hang deadline and Kueue's queue in the pure state machine (no I/O)."""

from __future__ import annotations

import copy
import math
from datetime import datetime, timedelta
from typing import Any

from rlhf_api.progress_status import TimedEvent
from rlhf_operator.estimate import fit_warnings
from rlhf_operator.observed_job import ObservedJob
from rlhf_operator.reconcile import EndJob, Outcome, ProgressReading, reconcile

from .conftest import base_run
from .test_reconcile import NOW, SETTINGS, body_of, condition, creates, event_reasons, job, result, stage_of


def step(
    body: dict[str, Any],
    jobs: dict[str, ObservedJob],
    now: datetime = NOW,
    progress: dict[str, ProgressReading] | None = None,
) -> tuple[Outcome, dict[str, Any]]:
    outcome = reconcile(body, jobs, now, SETTINGS, fit_check=fit_warnings, progress=progress)
    after = copy.deepcopy(body)
    after["status"] = outcome.new_status
    return outcome, after


def reading(*events: tuple[float, dict[str, Any]], complete: bool = True) -> dict[str, ProgressReading]:
    timed = tuple(TimedEvent(NOW + timedelta(seconds=t), {"stage": "sft", **e}) for t, e in events)
    return {"demo-sft-1": ProgressReading(timed, complete)}


def running(**sft: Any) -> dict[str, Any]:
    run = base_run("demo")
    run["spec"]["sft"].update(sft)
    _, body = step(body_of(run), {})
    return body


def test_progress_reaches_the_stage_and_the_printer_columns() -> None:
    body = running()
    outcome, after = step(body, job("demo-sft-1", "Running"), progress=reading((-30, {"step": 10, "max_steps": 100})))
    assert outcome.events == []  # progress is not a transition: no event
    sft = stage_of(after, "sft")["progress"]
    assert sft["step"] == 10 and sft["totalSteps"] == 100 and sft["percent"] == 10.0
    after_status = after["status"]
    assert (after_status["progress"], after_status["stageProgress"]) == ("0/3 stages", "10%")
    assert "eta" not in after_status  # one point: no speed yet
    outcome, later = step(
        after, job("demo-sft-1", "Running"), NOW, reading((-10, {"step": 30, "max_steps": 100, "loss": 0.9}))
    )
    sft = stage_of(later, "sft")["progress"]
    assert sft["stepsPerSecond"] == 1.0 and sft["metrics"] == {"loss": 0.9}
    assert later["status"]["stageProgress"] == "30%" and later["status"]["eta"] == "1m"  # 70 steps at 1/s
    # nothing new read (or no reading at all, a pass for another reason): nothing to write
    for progress in (None, reading((-10, {"step": 30, "max_steps": 100}))):
        again, _ = step(later, job("demo-sft-1", "Running"), NOW + timedelta(seconds=30), progress)
        assert again.actions == [] and again.status_patch == {}


def test_a_warn_guard_sets_healthy_false_once_per_episode_and_recovers() -> None:
    body = running(guards={"maxKL": 0.5})
    outcome, after = step(body, job("demo-sft-1", "Running"), progress=reading((-5, {"step": 5, "kl": 0.9})))
    assert event_reasons(outcome) == [("Warning", "GuardTripped")]
    assert "kl=0.9 (> maxKL 0.5)" in outcome.events[0].body["message"]
    healthy = condition(after, "Healthy")
    assert (healthy["status"], healthy["reason"]) == ("False", "GuardTripped")
    assert stage_of(after, "sft")["phase"] == "Running" and outcome.ends == []  # warn: training goes on
    outcome, after = step(after, job("demo-sft-1", "Running"), progress=reading((1, {"step": 6, "kl": 1.2})))
    assert outcome.events == [] and "kl=1.2" in condition(after, "Healthy")["message"]
    outcome, after = step(after, job("demo-sft-1", "Running"), progress=reading((2, {"step": 7, "kl": 0.1})))
    assert (condition(after, "Healthy")["status"], condition(after, "Healthy")["reason"]) == ("True", "GuardsPassing")


def test_a_tripped_guard_stays_current_across_a_spec_change() -> None:
    body = running(guards={"maxKL": 0.5})
    _, body = step(body, job("demo-sft-1", "Running"), progress=reading((-5, {"step": 5, "kl": 0.9})))
    body["metadata"]["generation"] = 2
    body["spec"]["suspend"] = True
    _, after = step(body, job("demo-sft-1", "Running"))
    healthy = condition(after, "Healthy")
    assert (healthy["status"], healthy["observedGeneration"]) == ("False", 2)
    assert healthy["lastTransitionTime"] == condition(body, "Healthy")["lastTransitionTime"]


def test_a_stop_guard_fails_the_stage_without_retry_and_ends_its_job() -> None:
    body = running(guards={"maxKL": 0.5, "action": "stop"})
    outcome, after = step(body, job("demo-sft-1", "Running"), progress=reading((-5, {"step": 40, "kl": 3.0})))
    sft = stage_of(after, "sft")
    assert sft["phase"] == "Failed" and sft["attempts"] == 1
    assert "kl=3 (> maxKL 0.5)" in sft["message"] and "checkpoints are kept" in sft["message"]
    assert [a.name for a in outcome.ends] == ["demo-sft-1"] and creates(outcome) == []
    assert after["status"]["phase"] == "Failed" and condition(after, "Healthy")["status"] == "False"
    assert ("Warning", "GuardTripped") in event_reasons(outcome)


def test_a_non_finite_loss_trips_with_no_guards_section() -> None:
    body = running()
    outcome, after = step(body, job("demo-sft-1", "Running"), progress=reading((-1, {"step": 3, "loss": math.nan})))
    assert condition(after, "Healthy")["status"] == "False"
    assert "loss=nan (non-finite)" in outcome.events[0].body["message"]
    assert stage_of(after, "sft")["phase"] == "Running"  # the default action is warn


def test_hang_deadline_startup_allowance_then_progress_deadline() -> None:
    body = running(progressDeadlineSeconds=120, startupProgressDeadlineSeconds=600)
    outcome, body = step(body, job("demo-sft-1", "Running"))  # first seen running: the clock starts
    assert stage_of(body, "sft")["runningSince"] == "2026-01-01T12:00:00Z"
    jobs = job("demo-sft-1", "Running")
    # loading the model: no event for 5 min is fine (startup allowance 10 min)
    outcome, after = step(body, jobs, NOW + timedelta(seconds=300), reading())
    assert outcome.status_patch == {} and outcome.actions == []
    # the first event; then 2 minutes of silence are fine, a little more is a hang
    _, body = step(body, jobs, NOW + timedelta(seconds=400), reading((390, {"step": 1, "max_steps": 50})))
    outcome, _ = step(body, jobs, NOW + timedelta(seconds=510), reading())
    assert outcome.actions == [] and outcome.status_patch == {}
    # an unreadable log (an API error) proves nothing: no hang concluded
    outcome, _ = step(body, jobs, NOW + timedelta(seconds=600), reading(complete=False))
    assert outcome.actions == []
    outcome, after = step(body, jobs, NOW + timedelta(seconds=600), reading())
    assert event_reasons(outcome)[0] == ("Warning", "StageStalled")
    assert "no progress event for 120s" in outcome.events[0].body["message"]
    assert [a.name for a in outcome.ends] == ["demo-sft-1"]
    sft = stage_of(after, "sft")
    assert (sft["phase"], sft["attempts"], sft["jobName"]) == ("Running", 2, "demo-sft-2")  # a counted retry
    assert "runningSince" not in sft  # the next attempt's clock starts when its job runs
    assert sft["progress"] == {"step": 1, "totalSteps": 50, "percent": 2.0, "metrics": {}}  # its time and speed go
    assert creates(outcome) == ["demo-sft-2"]


def test_no_first_event_within_the_startup_allowance_is_a_hang() -> None:
    body = running(progressDeadlineSeconds=60)  # startup allowance: max(3 x 60 s, 30 min)
    _, body = step(body, job("demo-sft-1", "Running"))
    outcome, _ = step(body, job("demo-sft-1", "Running"), NOW + timedelta(seconds=1799), reading())
    assert outcome.actions == []
    outcome, after = step(body, job("demo-sft-1", "Running"), NOW + timedelta(seconds=1801), reading())
    assert "within 1800s of starting" in stage_of(after, "sft")["message"]
    assert [a.name for a in outcome.actions if isinstance(a, EndJob)] == ["demo-sft-1"]


def test_without_a_deadline_silence_is_no_hang() -> None:
    body = running()
    outcome, after = step(body, job("demo-sft-1", "Running"), NOW + timedelta(days=3), reading())
    assert outcome.actions == [] and "runningSince" not in stage_of(after, "sft")


def test_a_queued_job_shows_its_queue_until_kueue_admits_it() -> None:
    run = base_run("demo", queueName="team-a")
    outcome, body = step(body_of(run), {})
    sft = stage_of(body, "sft")
    assert sft["phase"] == "Queued" and sft["message"] == "waiting for admission by Kueue queue team-a"
    assert body["status"]["phase"] == "Pending" and condition(body, "Reconciling")["reason"] == "StageQueued"
    again, body = step(body, job("demo-sft-1", "Suspended", suspended=True))
    assert again.actions == [] and again.status_patch == {}  # still waiting: nothing to do
    again, _ = step(body, job("demo-sft-1", "Pending"))  # created, not yet seen by the watch: no admission
    assert again.actions == [] and again.status_patch == {}
    outcome, body = step(body, job("demo-sft-1", "Running"))  # Kueue unsuspended it
    assert stage_of(body, "sft")["phase"] == "Running" and "message" not in stage_of(body, "sft")
    assert event_reasons(outcome) == [("Normal", "StageAdmitted")] and body["status"]["phase"] == "Running"
    # preempted by Kueue: the job is suspended again, the stage waits again
    outcome, body = step(body, job("demo-sft-1", "Suspended", suspended=True))
    assert stage_of(body, "sft")["phase"] == "Queued" and event_reasons(outcome) == [("Normal", "StageQueued")]


def test_a_succeeded_stage_ends_its_progress_where_its_result_says() -> None:
    body = running()
    _, body = step(body, job("demo-sft-1", "Running"), progress=reading((-9, {"step": 30, "max_steps": 100})))
    done = result("sft").model_copy(update={"steps": 100, "planned_steps": 100})
    _, after = step(body, job("demo-sft-1", "Succeeded", result=done))
    progress = stage_of(after, "sft")["progress"]
    assert (progress["step"], progress["percent"]) == (100, 100.0) and "estimatedCompletionTime" not in progress
    assert after["status"]["progress"] == "1/3 stages" and "stageProgress" not in after["status"]


def test_a_created_job_counts_as_running_once_its_log_reads() -> None:
    """Trainer v2 reports no Running condition: a log that could be read means the pods run."""
    body = running(progressDeadlineSeconds=60)
    _, after = step(body, job("demo-sft-1", "Created"), progress=reading(complete=False))  # container waiting
    assert "runningSince" not in stage_of(after, "sft")
    _, after = step(body, job("demo-sft-1", "Created"), progress=reading())
    assert stage_of(after, "sft")["runningSince"] == "2026-01-01T12:00:00Z"
