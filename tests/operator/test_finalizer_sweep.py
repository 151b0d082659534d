"""The Helm pre-delete hook's sweep (python -m rlhf_operator.finalizer_sweep) against the API
emulator: with the operator gone, a deleted stage job held by the operator's finalizer would stay
Terminating for ever (and a namespace with it); the sweep releases it and touches nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from rlhf_api.naming import STAGE_JOB_FINALIZER, labels
from rlhf_operator.finalizer_sweep import sweep

from .conftest import NAMESPACE, Cluster, client_as
from .emulator import PYTORCHJOBS, TRAINJOBS
from .enforcement import SWEEP_TOKEN

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

OTHER_FINALIZER = "example.com/keep-me"


def job(kind: str, name: str, namespace: str, finalizers: list[str], stage_job: bool = True) -> dict[str, Any]:
    api = "kubeflow.org/v1" if kind == "PyTorchJob" else "trainer.kubeflow.org/v1alpha1"
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "finalizers": finalizers}
    if stage_job:
        meta["labels"] = labels("demo", "sft", 1)
    return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": MINIMAL_SPECS[kind]}


# The least each upstream CRD accepts (its required fields).
MINIMAL_SPECS: dict[str, dict[str, Any]] = {
    "PyTorchJob": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": {}}}},
    "TrainJob": {"runtimeRef": {"name": "torch-distributed"}},
}


async def create(cluster: Cluster, resource: str, body: dict[str, Any]) -> None:
    group_version, plural = resource.rsplit("/", 1)
    path = f"/apis/{group_version}/namespaces/{body['metadata']['namespace']}/{plural}"
    async with cluster.kmock.request("POST", path, json=body) as resp:
        assert resp.status < 400, await resp.text()


def finalizers(cluster: Cluster, resource: str, namespace: str, name: str) -> list[str] | None:
    """None: the object is gone."""
    obj = cluster.kmock.objects[resource, namespace, name]
    if obj.deleted:
        return None
    return list((obj.raw.get("metadata") or {}).get("finalizers") or [])


async def test_sweep_releases_held_stage_jobs_only(cluster: Cluster) -> None:
    for ns in (NAMESPACE, "elsewhere"):
        cluster.kmock.objects["v1/namespaces", None, ns] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns},
        }
    await create(cluster, PYTORCHJOBS, job("PyTorchJob", "held", NAMESPACE, [STAGE_JOB_FINALIZER]))
    await create(cluster, PYTORCHJOBS, job("PyTorchJob", "shared", NAMESPACE, [OTHER_FINALIZER, STAGE_JOB_FINALIZER]))
    await create(cluster, PYTORCHJOBS, job("PyTorchJob", "not-ours", NAMESPACE, [STAGE_JOB_FINALIZER], stage_job=False))
    await create(cluster, PYTORCHJOBS, job("PyTorchJob", "free", NAMESPACE, []))
    await create(cluster, TRAINJOBS, job("TrainJob", "held-v2", NAMESPACE, [STAGE_JOB_FINALIZER]))
    await create(cluster, PYTORCHJOBS, job("PyTorchJob", "far", "elsewhere", [STAGE_JOB_FINALIZER]))
    # A job already deleted (its run was deleted with the operator stopped): Terminating, held.
    await create(cluster, PYTORCHJOBS, job("PyTorchJob", "terminating", NAMESPACE, [STAGE_JOB_FINALIZER]))
    await cluster.delete_job("terminating")
    assert cluster.deleting("terminating")

    client = client_as(str(cluster.kmock.url).rstrip("/"), SWEEP_TOKEN)  # the uninstall hook's identity
    try:
        released = await sweep(client, [NAMESPACE])  # namespaced operator: its namespaces only
        assert sorted(released) == [
            f"PyTorchJob {NAMESPACE}/held",
            f"PyTorchJob {NAMESPACE}/shared",
            f"PyTorchJob {NAMESPACE}/terminating",
            f"TrainJob {NAMESPACE}/held-v2",
        ]
        assert finalizers(cluster, PYTORCHJOBS, NAMESPACE, "held") == []
        assert finalizers(cluster, PYTORCHJOBS, NAMESPACE, "shared") == [OTHER_FINALIZER]
        assert finalizers(cluster, PYTORCHJOBS, NAMESPACE, "not-ours") == [STAGE_JOB_FINALIZER]
        assert finalizers(cluster, TRAINJOBS, NAMESPACE, "held-v2") == []
        assert finalizers(cluster, PYTORCHJOBS, "elsewhere", "far") == [STAGE_JOB_FINALIZER]
        # Nothing holds the deleted job any more: the API server finishes its deletion.
        assert "terminating" not in cluster.job_names()
        # Idempotent; cluster-wide scope reaches the other namespace.
        assert await sweep(client, [NAMESPACE]) == []
        assert await sweep(client, []) == ["PyTorchJob elsewhere/far"]
    finally:
        await client.close()


async def test_sweep_skips_a_job_kind_that_is_not_installed(kmock: Any) -> None:
    kmock.register(trainjobs=False)  # no Kubeflow Trainer v2 CRD: its list is a 404
    cluster = Cluster(kmock)
    kmock.objects["v1/namespaces", None, NAMESPACE] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE},
    }
    await create(cluster, PYTORCHJOBS, job("PyTorchJob", "held", NAMESPACE, [STAGE_JOB_FINALIZER]))
    client = client_as(str(kmock.url).rstrip("/"), SWEEP_TOKEN)
    try:
        assert await sweep(client, [NAMESPACE]) == [f"PyTorchJob {NAMESPACE}/held"]
    finally:
        await client.close()
