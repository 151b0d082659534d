"""API errors become status (issue 16, item 4): a write the API server refuses for good (4xx)
sets Stalled=True and posts a Warning with the server's message; the pass still patches the
status and the run is retried later with a capped backoff, without crash-looping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kmock import action, resource

from .conftest import NAMESPACE, Cluster, OperatorThread, base_run, wait_for
from .emulator import quota_refusal

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


def condition(cluster: Cluster, name: str, kind: str) -> dict[str, Any]:
    return next((c for c in cluster.status(name).get("conditions", []) if c["type"] == kind), {})


def stalled_condition(cluster: Cluster, name: str) -> dict[str, Any] | None:
    found = condition(cluster, name, "Stalled")
    return found if found.get("status") == "True" else None


def warnings(cluster: Cluster) -> list[str]:
    return [e["message"] for e in cluster.kmock.live("v1/events", NAMESPACE) if e.get("type") == "Warning"]


def requests_to(cluster: Cluster, verb: str, plural: str) -> int:
    return sum(1 for t in cluster.kmock.tally if t[0] == verb and t[1] == plural and t[4] == "operator")


async def test_quota_refusing_the_job_is_stalled_with_the_servers_message(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.kmock.admission.append(quota_refusal("pytorchjobs"))
    await cluster.apply(base_run("demo"))
    stalled = await wait_for(
        lambda: stalled_condition(cluster, "demo"),
        what="Stalled",
    )
    assert stalled["reason"] == "CreateRefused"
    assert "exceeded quota: team-quota" in stalled["message"] and "demo-sft-1" in stalled["message"]
    assert "exceeded quota" in cluster.status("demo")["message"]
    await wait_for(lambda: any("exceeded quota" in m for m in warnings(cluster)), what="a Warning with the message")
    sft = cluster.stage("demo", "sft")
    assert sft.get("attempts", 0) == 0 and sft.get("phase") == "Pending"  # a refused create is no attempt
    # Not a crash loop: a few retries in a second, not dozens.
    before = requests_to(cluster, "create", "pytorchjobs")
    await asyncio.sleep(1.0)
    assert requests_to(cluster, "create", "pytorchjobs") - before <= 3
    # The quota is raised: the next retry creates the job and the stall clears.
    cluster.kmock.admission.pop()
    await wait_for(lambda: "demo-sft-1" in cluster.job_names(), what="sft-1 created", timeout=30)
    await wait_for(lambda: condition(cluster, "demo", "Stalled").get("status") == "False", what="no longer Stalled")
    assert cluster.stage("demo", "sft")["attempts"] == 1


async def test_invalid_claim_is_stalled_and_nothing_mounts_it(cluster: Cluster, operator: OperatorThread) -> None:
    def refuse_claim(request: Any) -> Any:
        from kmock._internal.k8s import KubernetesError

        if request.action == action.CREATE and request.resource == resource("v1/persistentvolumeclaims"):
            message = 'PersistentVolumeClaim "demo-data" is invalid: spec.storageClassName: Invalid value: "gold"'
            return KubernetesError(status=422, reason="Invalid", message=message)
        return None

    cluster.kmock.admission.append(refuse_claim)
    await cluster.apply(base_run("demo"))
    stalled = await wait_for(
        lambda: stalled_condition(cluster, "demo"),
        what="Stalled",
    )
    assert 'PersistentVolumeClaim "demo-data" is invalid' in stalled["message"]
    await asyncio.sleep(0.3)
    assert cluster.job_names() == []  # no job mounts a claim that does not exist
    assert cluster.status("demo").get("volumeClaim") is None


@pytest.mark.parametrize(
    ("plural", "body", "status"),
    [
        (
            "persistentvolumeclaims",
            {"kind": "PersistentVolumeClaim", "spec": {"resources": {"requests": {"storage": "5GiGi"}}}},
            422,
        ),
        (
            "persistentvolumeclaims",
            {"kind": "PersistentVolumeClaim", "spec": {"resources": {"requests": {"storage": "0"}}}},
            422,
        ),
        (
            "persistentvolumeclaims",
            {"kind": "PersistentVolumeClaim", "spec": {"resources": {"requests": {"storage": "1Gi"}}}},
            201,
        ),
    ],
)
async def test_emulator_refuses_bad_quantities_like_the_api_server(
    cluster: Cluster, plural: str, body: dict[str, Any], status: int
) -> None:
    body = {"apiVersion": "v1", "metadata": {"name": "x", "namespace": NAMESPACE}, **body}
    async with cluster.kmock.request("POST", f"/api/v1/namespaces/{NAMESPACE}/{plural}", json=body) as resp:
        assert resp.status == status


@pytest.mark.parametrize(("cpu", "status"), [("1.2.3", 422), ("500m", 201)])
async def test_emulator_refuses_a_bad_quantity_in_a_jobs_pod_template(cluster: Cluster, cpu: str, status: int) -> None:
    container = {"name": "pytorch", "image": "x", "resources": {"requests": {"cpu": cpu}}}
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "j", "namespace": NAMESPACE},
        "spec": {"pytorchReplicaSpecs": {"Master": {"template": {"spec": {"containers": [container]}}}}},
    }
    async with cluster.kmock.request(
        "POST", f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs", json=job
    ) as resp:
        assert resp.status == status
