"""API faults injected through kmock reactions: the run still completes and nothing is lost.

kmock stores a write before a reaction answers it, so an injected 500 on a create means "stored,
but the client was told otherwise": the retry then meets 409, which the operator takes as done.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from kmock import Response, action, resource, subresource

from .conftest import TEST_TUNING, Cluster, OperatorThread, base_run, wait_for
from .emulator import PYTORCHJOBS, RLHFRUNS

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


def failing(statuses: list[int], served: list[int]) -> Callable[[Any], Any]:
    """Answer the next requests with these statuses, then step aside (NotImplemented)."""
    queue = list(statuses)

    def respond(request: Any) -> Any:
        if not queue:
            return NotImplemented  # disables this reaction: the emulator answers from now on
        status = queue.pop(0)
        served.append(status)
        return Response(
            status=status,
            payload={
                "apiVersion": "v1",
                "kind": "Status",
                "status": "Failure",
                "code": status,
                "reason": "Injected",
                "message": f"injected {status}",
            },
        )

    return respond


def broken_watch(kind: str, served: list[str]) -> Callable[[Any], Any]:
    """A watch stream that is expired (410 in-stream) or simply dropped, once."""
    used = [False]

    def respond(request: Any) -> Any:
        if used[0]:
            return NotImplemented
        used[0] = True
        served.append(kind)
        if kind == "expired":
            gone = {"kind": "Status", "apiVersion": "v1", "code": 410, "reason": "Expired", "message": "too old"}
            return ({"type": "ERROR", "object": gone},)
        return (b"",)  # the stream ends at once

    return respond


async def test_run_completes_despite_faults(cluster: Cluster) -> None:
    kmock = cluster.kmock
    served: list[Any] = []
    kmock[action.CREATE, resource(PYTORCHJOBS)] << failing([500], served)
    kmock[action.CREATE, resource("v1/configmaps")] << failing([503], served)
    kmock[action.CREATE, resource("v1/persistentvolumeclaims")] << failing([409], served)
    kmock[action.CREATE, resource("v1/events")] << failing([500, 500, 500], served)
    kmock[action.UPDATE, resource(RLHFRUNS), subresource("status")] << failing([409, 500, 503], served)
    kmock[action.UPDATE, resource(PYTORCHJOBS), lambda r: r.subresource is None] << failing([503], served)
    kmock[action.WATCH, resource(PYTORCHJOBS)] << broken_watch("expired", served)
    kmock[action.WATCH, resource(RLHFRUNS)] << broken_watch("dropped", served)

    # Watches reconnect every second, so later watch faults hit a running operator too.
    tuning = dataclasses.replace(TEST_TUNING, watch_client_timeout=1.0)
    url = str(kmock.url).rstrip("/")
    operator = await asyncio.to_thread(OperatorThread(url, tuning=tuning).start)
    try:
        await cluster.apply(base_run("flaky"))
        await wait_for(lambda: cluster.stage("flaky", "sft").get("jobName") == "flaky-sft-1", what="sft-1")
        # A watch that expires mid-run.
        kmock[action.WATCH, resource(RLHFRUNS)] << broken_watch("expired", served)
        await wait_for(lambda: served.count("expired") == 2, what="the run watch to expire")
        await cluster.finish_stage("flaky-sft-1", metrics={"loss": 0.125})
        await wait_for(lambda: cluster.stage("flaky", "reward").get("jobName") == "flaky-reward-1", what="reward-1")
        # Suspend/resume patches of the job fail once too.
        await cluster.patch_run("flaky", {"spec": {"suspend": True}})
        await wait_for(lambda: cluster.status("flaky").get("phase") == "Suspended", what="Suspended", timeout=20)
        await cluster.patch_run("flaky", {"spec": {"suspend": False}})
        await wait_for(lambda: cluster.status("flaky").get("phase") == "Running", what="resumed", timeout=20)
        kmock[action.WATCH, resource(PYTORCHJOBS)] << broken_watch("dropped", served)
        await wait_for(lambda: served.count("dropped") == 2, what="the job watch to drop")
        await cluster.finish_stage("flaky-reward-1", metrics={"accuracy": 0.75})
        await wait_for(lambda: cluster.stage("flaky", "ppo").get("jobName") == "flaky-ppo-1", what="ppo-1")
        await cluster.finish_stage("flaky-ppo-1", metrics={"reward": 1.5})
        await wait_for(lambda: cluster.status("flaky").get("phase") == "Succeeded", what="Succeeded", timeout=20)
    finally:
        await asyncio.to_thread(operator.stop)
    assert operator.error is None

    # Every fault was actually served.
    assert sorted(x for x in served if isinstance(x, int)) == sorted([500, 503, 409, 500, 500, 500, 409, 500, 503, 503])
    assert sorted(x for x in served if isinstance(x, str)) == ["dropped", "dropped", "expired", "expired"]
    # Nothing lost, nothing duplicated.
    status = cluster.status("flaky")
    assert [s["phase"] for s in status["stages"]] == ["Succeeded"] * 3
    assert [s["metrics"] for s in status["stages"]] == [{"loss": 0.125}, {"accuracy": 0.75}, {"reward": 1.5}]
    assert [s["attempts"] for s in status["stages"]] == [1, 1, 1]
    assert cluster.job_names() == ["flaky-ppo-1", "flaky-reward-1", "flaky-sft-1"]
    assert len(cluster.kmock.live("v1/configmaps", "team")) == 3


async def test_without_trainjob_api(cluster: Cluster) -> None:
    """TrainJob is optional: with its API absent, PyTorchJob runs work as usual."""
    del cluster.kmock.resources["trainer.kubeflow.org/v1alpha1/trainjobs"]
    operator = await asyncio.to_thread(OperatorThread(str(cluster.kmock.url).rstrip("/")).start)
    try:
        await cluster.apply(base_run("plain", pipeline=["sft"], reward=None, ppo=None))
        await wait_for(lambda: "plain-sft-1" in cluster.job_names(), what="sft-1")
        await cluster.finish_stage("plain-sft-1")
        await wait_for(lambda: cluster.status("plain").get("phase") == "Succeeded", what="Succeeded")
    finally:
        await asyncio.to_thread(operator.stop)
