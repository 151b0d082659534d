"""Leader election with a Lease (controller/leader.py): the pure decision, two replicas against
the emulator, and a standby operator that writes nothing (issue 16, item 9)."""

from __future__ import annotations

import asyncio

import pytest
from rlhf_operator.controller.kube_client import KubeClient
from rlhf_operator.controller.leader import LEASES, LeaderElection, Observed, decide
from rlhf_operator.settings import OperatorSettings

from tests.support.chart import NAMESPACE as RELEASE_NAMESPACE

from .conftest import Cluster, OperatorThread, base_run, client_as, wait_for


@pytest.mark.parametrize(
    ("lease", "now", "step"),
    [
        (None, 0.0, "create"),
        (Observed("me", "t1", "1", since=0.0), 100.0, "renew"),
        (Observed("other", "t1", "1", since=0.0), 5.0, "wait"),  # the holder renewed 5 s ago
        (Observed("other", "t1", "1", since=0.0), 14.9, "wait"),
        (Observed("other", "t1", "1", since=0.0), 15.0, "take"),  # silent for a whole lease
        (Observed(None, None, "1", since=0.0), 0.0, "take"),  # released
        (Observed("", None, "1", since=0.0), 0.0, "take"),
    ],
)
def test_decide(lease: Observed | None, now: float, step: str) -> None:
    assert decide(lease, "me", now, lease_seconds=15.0) == step


# The chart grants the Lease in its release namespace only (leader-election-rbac.yaml).
LEASE_NAMESPACE = RELEASE_NAMESPACE


def _client(cluster: Cluster) -> KubeClient:
    return client_as(str(cluster.kmock.url).rstrip("/"))


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_one_of_two_replicas_leads_and_the_other_takes_over(cluster: Cluster) -> None:
    a_client, b_client = _client(cluster), _client(cluster)
    a = LeaderElection(a_client, LEASE_NAMESPACE, "a", lease_seconds=0.6, renew_seconds=0.1)
    b = LeaderElection(b_client, LEASE_NAMESPACE, "b", lease_seconds=0.6, renew_seconds=0.1)
    try:
        assert await a.try_once() and a.is_leader()
        assert not await b.try_once() and not b.is_leader()
        for _ in range(8):  # a renews; b keeps seeing the record change and waits
            await asyncio.sleep(0.1)
            assert await a.try_once()
            assert not await b.try_once()
        # a goes silent (crashed, partitioned): b takes over after a lease of silence.
        await asyncio.sleep(0.7)
        assert not a.is_leader()  # a stopped acting by itself before b could take over
        assert await b.try_once() and b.is_leader()
        lease = await b_client.get(LEASES, LEASE_NAMESPACE, "rlhf-operator-leader")
        assert lease is not None and lease["spec"]["holderIdentity"] == "b"
        assert not await a.try_once() and not a.is_leader()  # a is back: it follows
    finally:
        await a_client.close()
        await b_client.close()


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_a_standby_replica_writes_nothing(cluster: Cluster) -> None:
    # Another replica holds the lease (and keeps renewing it).
    holder_client = _client(cluster)
    holder = LeaderElection(holder_client, LEASE_NAMESPACE, "other", lease_seconds=15.0, renew_seconds=5.0)
    assert await holder.try_once()
    settings = OperatorSettings(metrics_port=0, leader_election_namespace=LEASE_NAMESPACE)
    url = str(cluster.kmock.url).rstrip("/")
    standby = await asyncio.to_thread(OperatorThread(url, settings=settings).start)
    try:
        await cluster.apply(base_run("demo"))
        await asyncio.sleep(1.0)
        assert cluster.job_names() == [] and not cluster.status("demo")
        assert not [t for t in cluster.kmock.tally if t[4] == "operator" and t[0] != "get" and t[1] != "leases"]
        # The holder is gone (its lease deleted): the standby takes over and acts.
        async with cluster.kmock.request(
            "DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/rlhf-operator-leader"
        ) as resp:
            assert resp.status < 400
        await wait_for(lambda: "demo-sft-1" in cluster.job_names(), what="the new leader acts", timeout=20)
    finally:
        await asyncio.to_thread(standby.stop)
        await holder_client.close()
    assert standby.error is None
