"""Why an attempt waits, and its start deadline: the pure reading of pods and events
(table-driven), the state machine's use of it, and the operator against the API emulator with
pods in each waiting state."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from rlhf_api import reasons
from rlhf_api.naming import labels
from rlhf_operator.observed_job import ObservedJob
from rlhf_operator.pod_waiting import Waiting, pods_started, start_clock, why_waiting
from rlhf_operator.reconcile import PatchJob, PostEvent, jobs_to_inspect
from rlhf_operator.settings import OperatorSettings

from .conftest import NAMESPACE, Cluster, OperatorThread, base_run, wait_for
from .test_reconcile import NOW, body_of, condition, creates, stage_of, step

# --- pods and events, read -------------------------------------------------------------------


def pod(
    name: str = "demo-sft-1-master-0",
    phase: str = "Pending",
    waiting: tuple[str, str] | None = None,
    init_waiting: tuple[str, str] | None = None,
    scheduled: tuple[str, str, str] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if waiting:
        status["containerStatuses"] = [
            {"name": "pytorch", "state": {"waiting": {"reason": waiting[0], "message": waiting[1]}}}
        ]
    if init_waiting:
        status["initContainerStatuses"] = [
            {"name": "init", "state": {"waiting": {"reason": init_waiting[0], "message": init_waiting[1]}}}
        ]
    if scheduled:
        status["conditions"] = [
            {"type": "PodScheduled", "status": scheduled[0], "reason": scheduled[1], "message": scheduled[2]}
        ]
    return {"metadata": {"name": name}, "status": status}


def event(
    reason: str, message: str, involved: str = "demo-sft-1", type_: str = "Warning", at: str = "2026-01-01T12:00:00Z"
) -> dict[str, Any]:
    return {
        "type": type_,
        "reason": reason,
        "message": message,
        "involvedObject": {"name": involved},
        "lastTimestamp": at,
    }


PSS_MESSAGE = (
    'Error creating: pods "demo-sft-1-master-0" is forbidden: violates PodSecurity "restricted:latest": '
    'allowPrivilegeEscalation != false (container "pytorch" must set securityContext.allowPrivilegeEscalation=false)'
)
PULL = ("ImagePullBackOff", 'Back-off pulling image "registry.example/nope:1"')
SECRET = ("CreateContainerConfigError", 'secret "hf" not found')
UNSCHEDULABLE = ("False", "Unschedulable", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")

# (case, pods, events, expected reason or None, words in the message)
WHY = [
    ("no pods, no events", [], [], None, ""),
    ("starting normally", [pod(waiting=("ContainerCreating", ""))], [], None, ""),
    ("not scheduled yet, no verdict", [pod()], [], None, ""),
    ("running", [pod(phase="Running")], [], None, ""),
    ("image pull back-off", [pod(waiting=PULL)], [], "ImagePullBackOff", "registry.example/nope:1"),
    ("image pull error", [pod(waiting=("ErrImagePull", "not found"))], [], "ErrImagePull", "not found"),
    ("missing Secret", [pod(waiting=SECRET)], [], "CreateContainerConfigError", 'secret "hf" not found'),
    ("init container", [pod(init_waiting=PULL)], [], "ImagePullBackOff", "container init"),
    ("unschedulable", [pod(scheduled=UNSCHEDULABLE)], [], "Unschedulable", "Insufficient nvidia.com/gpu"),
    ("scheduled False, other reason", [pod(scheduled=("False", "SchedulingGated", "gated"))], [], None, ""),
    ("container problem beats unschedulable", [pod(waiting=SECRET, scheduled=UNSCHEDULABLE)], [], SECRET[0], ""),
    (
        "first pod by name",
        [pod("demo-sft-1-worker-0", waiting=PULL), pod("demo-sft-1-master-0", scheduled=UNSCHEDULABLE)],
        [],
        "Unschedulable",
        "demo-sft-1-master-0",
    ),
    ("pod security refusal", [], [event("FailedCreatePod", PSS_MESSAGE)], "PodSecurity", "violates PodSecurity"),
    (
        "quota refusal (TrainJob's child Job)",
        [],
        [event("FailedCreate", "exceeded quota: gpu", involved="demo-sft-1-node-0")],
        "FailedCreate",
        "exceeded quota",
    ),
    ("another job's refusal", [], [event("FailedCreatePod", PSS_MESSAGE, involved="demo-sft-10")], None, ""),
    ("a Normal event", [], [event("FailedCreatePod", "x", type_="Normal")], None, ""),
    (
        "newest refusal wins",
        [],
        [
            event("FailedCreatePod", PSS_MESSAGE, at="2026-01-01T12:00:00Z"),
            event("FailedCreatePod", "exceeded quota", at="2026-01-01T12:05:00Z"),
        ],
        "FailedCreatePod",
        "exceeded quota",
    ),
    ("pods exist: events ignored", [pod()], [event("FailedCreatePod", PSS_MESSAGE)], None, ""),
]


@pytest.mark.parametrize(("case", "pods", "events", "reason", "words"), WHY, ids=[c[0] for c in WHY])
def test_why_waiting(case: str, pods: Any, events: Any, reason: str | None, words: str) -> None:
    found = why_waiting(pods, events, "demo-sft-1")
    assert (found.reason if found else None) == reason, case
    if found:
        assert words in found.message and "\n" not in found.message and len(found.message) <= 300


def test_pods_started() -> None:
    assert not pods_started([]) and not pods_started([pod(), pod(waiting=PULL)])
    assert pods_started([pod(), pod(phase="Running")]) and pods_started([pod(phase="Failed")])


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([], "2026-01-01T12:00:00Z"),
        ([{"type": "Suspended", "status": "True", "lastTransitionTime": "2026-01-01T12:10:00Z"}], None),
        (
            [{"type": "Suspended", "status": "False", "lastTransitionTime": "2026-01-01T13:00:00Z"}],
            "2026-01-01T13:00:00Z",
        ),
        ([{"type": "Suspended", "status": "False", "lastTransitionTime": "2025-12-31T00:00:00Z"}], None),
    ],
)
def test_start_clock_counts_from_creation_or_the_last_resume(conditions: Any, expected: str | None) -> None:
    body = {"metadata": {"creationTimestamp": "2026-01-01T12:00:00Z"}, "status": {"conditions": conditions}}
    assert start_clock(body) == (expected or "2026-01-01T12:00:00Z")
    assert start_clock({"metadata": {}}) is None


# --- the state machine ------------------------------------------------------------------------

CREATED = "2026-01-01T12:00:00Z"  # == NOW
SETTINGS = OperatorSettings(metrics_port=0)


def starting(waiting: Waiting | None = None, **fields: Any) -> dict[str, ObservedJob]:
    job = ObservedJob(
        name="demo-sft-1", state="Created", stage="sft", attempt=1, start_clock=CREATED, waiting=waiting, **fields
    )
    return {job.name: job}


PULL_WAIT = Waiting("ImagePullBackOff", "pod demo-sft-1-master-0: container pytorch: Back-off pulling image")


def test_waiting_reason_shows_within_one_pass_and_its_event_once() -> None:
    _, body = step(body_of(base_run("demo")))
    assert jobs_to_inspect(body["status"], starting()) == ["demo-sft-1"]
    quiet, body = step(body, starting(), NOW + timedelta(seconds=5))
    assert quiet.actions == [] and quiet.requeue_after == SETTINGS.pod_start_check_seconds  # looks again soon
    outcome, body = step(body, starting(PULL_WAIT), NOW + timedelta(seconds=40))
    sft = stage_of(body, "sft")
    assert sft["phase"] == "Running"
    assert sft["message"] == "attempt 1 waiting to start: " + PULL_WAIT.message
    (warning,) = [a.body for a in outcome.actions if isinstance(a, PostEvent)]
    assert (warning["type"], warning["reason"]) == ("Warning", reasons.STAGE_WAITING)
    assert "Back-off pulling image" in warning["message"]
    reconciling = condition(body, "Reconciling")
    assert reconciling["reason"] == reasons.STAGE_WAITING and "Back-off pulling image" in reconciling["message"]
    assert outcome.requeue_after == 30
    # The same wait again: nothing new to say.
    again, body = step(body, starting(PULL_WAIT), NOW + timedelta(seconds=70))
    assert again.actions == [] and again.status_patch == {}
    # Another reason: said once more.
    other = Waiting("CreateContainerConfigError", 'pod x: container pytorch: secret "hf" not found')
    changed, body = step(body, starting(other), NOW + timedelta(seconds=100))
    assert [a.body["reason"] for a in changed.actions if isinstance(a, PostEvent)] == [reasons.STAGE_WAITING]
    # The problem goes away (the Secret was created) before the pods run: the message goes.
    cleared, body = step(body, starting(), NOW + timedelta(seconds=110))
    assert stage_of(body, "sft").get("message") is None and cleared.requeue_after == 30
    assert condition(body, "Reconciling")["reason"] == reasons.STAGE_RUNNING
    _, body = step(body, starting(other), NOW + timedelta(seconds=120))
    # The pods start: the message goes, the condition says running, no more polling.
    started, body = step(body, starting(pods_started=True), NOW + timedelta(seconds=130))
    assert stage_of(body, "sft").get("message") is None
    assert condition(body, "Reconciling")["reason"] == reasons.STAGE_RUNNING
    assert started.requeue_after is None


def test_start_deadline_fails_the_attempt_and_stops_its_job() -> None:
    run = base_run("demo")
    run["spec"]["sft"].update(startDeadlineSeconds=600, retries=1, retryBackoffSeconds=0)
    _, body = step(body_of(run))
    outcome, body = step(body, starting(PULL_WAIT), NOW + timedelta(seconds=590))
    assert outcome.requeue_after == 10  # the rest of the deadline, not the poll interval
    outcome, body = step(body, starting(PULL_WAIT), NOW + timedelta(seconds=600))
    assert PatchJob(outcome.actions[0].api, "demo-sft-1", {"spec": {"runPolicy": {"suspend": True}}}) in outcome.actions
    assert creates(outcome) == ["demo-sft-2"]  # backoff 0: the next attempt at once
    sft = stage_of(body, "sft")
    assert sft["attempts"] == 2 and sft["phase"] == "Running"
    events = [a.body for a in outcome.actions if isinstance(a, PostEvent)]
    assert events[0]["reason"] == reasons.STAGE_START_TIMEOUT
    assert "did not start within startDeadlineSeconds (600s): pod demo-sft-1-master-0" in events[0]["message"]
    # Attempt 2 waits past the deadline too: no retries left, the stage fails, naming the reason.
    second = {
        "demo-sft-2": ObservedJob(
            "demo-sft-2", "Created", stage="sft", attempt=2, start_clock="2026-01-01T12:10:00Z", waiting=PULL_WAIT
        )
    }
    outcome, body = step(body, second, NOW + timedelta(seconds=1300))
    assert stage_of(body, "sft")["phase"] == "Failed" and body["status"]["phase"] == "Failed"
    assert "did not start within startDeadlineSeconds" in stage_of(body, "sft")["message"]
    assert condition(body, "Stalled")["status"] == "True"


@pytest.mark.parametrize(
    "fields",
    [
        {"suspended": True},  # spec.suspend, or queued in Kueue: not waiting for its pods
        {"state": "Running"},
        {"pods_started": True},  # a TrainJob has no Running condition: its pods say so
        {"start_clock": None},  # not seen on the server yet (or a local process)
    ],
)
def test_no_deadline_for_jobs_not_waiting_for_their_pods(fields: dict[str, Any]) -> None:
    _, body = step(body_of(base_run("demo")))
    job = dataclasses.replace(next(iter(starting(PULL_WAIT).values())), **fields)
    outcome, after = step(body, {job.name: job}, NOW + timedelta(days=2))
    assert [a for a in outcome.actions if isinstance(a, PatchJob)] == []
    assert stage_of(after, "sft")["attempts"] == 1 and stage_of(after, "sft")["phase"] in ("Running", "Suspended")
    assert jobs_to_inspect(after["status"], {job.name: job}) == []


# --- against the API emulator -------------------------------------------------------------------

FAST = OperatorSettings(metrics_port=0, pod_start_check_seconds=0.2)


def stage_pod(run: str, stage: str, attempt: int, status: dict[str, Any]) -> dict[str, Any]:
    job = f"{run}-{stage}-{attempt}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job}-master-0",
            "namespace": NAMESPACE,
            "labels": {
                **labels(run, stage, attempt),
                "training.kubeflow.org/job-name": job,
                "training.kubeflow.org/replica-type": "master",
            },
        },
        "spec": {"containers": [{"name": "pytorch", "image": "x"}]},
        "status": status,
    }


async def _post(cluster: Cluster, path: str, body: dict[str, Any]) -> None:
    async with cluster.kmock.request("POST", path, json=body) as resp:
        assert resp.status < 400, await resp.text()


def warnings_about(cluster: Cluster, reason: str) -> list[dict[str, Any]]:
    return [
        e
        for e in cluster.kmock.live("v1/events", NAMESPACE)
        if e.get("reason") == reason and e.get("source", {}).get("component") == "rlhf-operator"
    ]


POD_STATES = {
    "image-pull": ({"phase": "Pending", **pod(waiting=PULL)["status"]}, "ImagePullBackOff", "registry.example/nope"),
    "missing-hf-token": ({"phase": "Pending", **pod(waiting=SECRET)["status"]}, "secret", 'secret "hf" not found'),
    "unschedulable": ({"phase": "Pending", **pod(scheduled=UNSCHEDULABLE)["status"]}, "unschedulable", "nvidia.com"),
}


@pytest.mark.asyncio
@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(POD_STATES))
async def test_operator_shows_why_pods_wait(cluster: Cluster, case: str) -> None:
    status, _reason, words = POD_STATES[case]
    thread = await asyncio.to_thread(OperatorThread(str(cluster.kmock.url).rstrip("/"), FAST).start)
    try:
        run = base_run("demo", secrets={"hfToken": {"name": "hf", "key": "token"}})
        await cluster.apply(run)
        await wait_for(lambda: "demo-sft-1" in cluster.job_names(), what="job")
        await cluster.set_job_condition("demo-sft-1", "Created")
        await _post(cluster, f"/api/v1/namespaces/{NAMESPACE}/pods", stage_pod("demo", "sft", 1, status))
        # No job event follows a pod change: the operator's own re-check finds it.
        await wait_for(lambda: words in (cluster.stage("demo", "sft").get("message") or ""), what="waiting reason")
        assert cluster.stage("demo", "sft")["phase"] == "Running"
        (warning,) = await wait_for(lambda: warnings_about(cluster, "StageWaiting"), what="Warning event")
        assert warning["type"] == "Warning" and words in warning["message"]
        reconciling = next(c for c in cluster.status("demo")["conditions"] if c["type"] == "Reconciling")
        assert reconciling["reason"] == "StageWaiting"
    finally:
        await asyncio.to_thread(thread.stop)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_operator_shows_a_pod_security_refusal_and_fails_the_attempt_after_the_deadline(
    cluster: Cluster,
) -> None:
    thread = await asyncio.to_thread(OperatorThread(str(cluster.kmock.url).rstrip("/"), FAST).start)
    try:
        run = base_run("demo")
        run["spec"]["sft"].update(startDeadlineSeconds=600, retries=0)
        await cluster.apply(run)
        await wait_for(lambda: "demo-sft-1" in cluster.job_names(), what="job")
        await cluster.set_job_condition("demo-sft-1", "Created")
        # The training operator's pod create was refused by Pod Security admission: no pod, an event.
        refusal = copy.deepcopy(event("FailedCreatePod", PSS_MESSAGE))
        refusal.update(
            apiVersion="v1",
            kind="Event",
            metadata={"name": "demo-sft-1.refused", "namespace": NAMESPACE},
            source={"component": "pytorchjob-controller"},
        )
        refusal["involvedObject"].update(kind="PyTorchJob", namespace=NAMESPACE)
        await _post(cluster, f"/api/v1/namespaces/{NAMESPACE}/events", refusal)
        await wait_for(
            lambda: "violates PodSecurity" in (cluster.stage("demo", "sft").get("message") or ""), what="PSS reason"
        )
        assert warnings_about(cluster, "StageWaiting")
        # Time passes (the job is aged instead of the test waiting 600 s): past the deadline.
        path = f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs/demo-sft-1"
        async with cluster.kmock.request(
            "PATCH",
            path,
            json={"metadata": {"creationTimestamp": "2020-01-01T00:00:00Z"}},
            headers={"Content-Type": "application/merge-patch+json"},
        ) as resp:
            assert resp.status < 400
        await wait_for(lambda: cluster.status("demo").get("phase") == "Failed", what="attempt failed")
        message = cluster.stage("demo", "sft")["message"]
        assert "did not start within startDeadlineSeconds (600s)" in message and "PodSecurity" in message
        # Stopped: suspended at the deadline, then ended (deleted) as a failed stage's job that
        # still exists (reconcile/progress.py's EndJob): no more pod creation attempts either way.
        job = next((j for j in cluster.jobs() if j["metadata"]["name"] == "demo-sft-1"), None)
        assert job is None or job["spec"]["runPolicy"]["suspend"] is True
        assert warnings_about(cluster, "StageFailed") or warnings_about(cluster, "StageStartTimeout")
    finally:
        await asyncio.to_thread(thread.stop)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_reading_pods_and_events_is_best_effort(cluster: Cluster) -> None:
    """An operator without `list` on events (an older chart's RBAC) still runs the stage: the
    403 is logged, the pass goes on, the stage finishes."""
    from kmock import Response, action, resource
    from rlhf_operator.controller import metrics

    refused: list[int] = []

    def forbidden(request: Any) -> Any:
        refused.append(403)
        return Response(status=403, payload={"kind": "Status", "code": 403, "message": "events is forbidden"})

    cluster.kmock[action.LIST, resource("v1/events")] << forbidden
    failed_passes = metrics.REGISTRY.get_sample_value("rlhf_reconcile_errors_total", {"kind": "rejected"}) or 0.0
    thread = await asyncio.to_thread(OperatorThread(str(cluster.kmock.url).rstrip("/"), FAST).start)
    try:
        await cluster.apply(base_run("demo"))
        await wait_for(lambda: "demo-sft-1" in cluster.job_names(), what="job")
        await cluster.set_job_condition("demo-sft-1", "Created")  # no pods yet: the events are asked for
        await wait_for(lambda: refused, what="a refused events list")
        await cluster.finish_stage("demo-sft-1")
        await wait_for(lambda: cluster.stage("demo", "sft").get("phase") == "Succeeded", what="sft Succeeded")
        assert thread.error is None
        # No pass failed on it (it would have counted as a rejected API call).
        assert (metrics.REGISTRY.get_sample_value("rlhf_reconcile_errors_total", {"kind": "rejected"}) or 0.0) == (
            failed_passes
        )
    finally:
        await asyncio.to_thread(thread.stop)
