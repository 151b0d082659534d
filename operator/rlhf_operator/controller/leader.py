"""Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does
(issue 16, item 9): of several operator replicas exactly one acts; the others keep watching
(their kopf indexes stay warm) and take over within `lease_seconds` of the leader going silent.

Why a Lease and not kopf's peering: kopf's peering pauses kopf's own handlers, not this
operator's work queue (retry timers, requeues), and needs kopf's peering CRDs installed; a Lease
is a built-in object, gates exactly our writes, and is what Kubernetes' own controllers use.

Clocks: a holder's renewTime is never compared with this machine's clock. As client-go does, a
record is expired when it has not *changed* for lease_seconds of our own monotonic time since we
first observed it (`decide`, pure, table-tested).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ..api_ref import ApiRef
from .kube_client import ApiError, KubeClient

logger = logging.getLogger(__name__)

LEASES = ApiRef("coordination.k8s.io", "v1", "leases")
LEASE_NAME = "rlhf-operator-leader"

Step = Literal["create", "renew", "take", "wait"]


@dataclass(frozen=True)
class Observed:
    """The lease's record as we last saw it, and when (our monotonic clock) it last changed."""

    holder: str | None
    renew_time: str | None
    resource_version: str | None
    since: float


def decide(lease: Observed | None, me: str, now: float, lease_seconds: float) -> Step:
    """What to do with the lease: create it (none), renew it (ours), take it (the holder has
    been silent for lease_seconds of our time, or there is none), or wait (another holds it)."""
    if lease is None:
        return "create"
    if lease.holder == me:
        return "renew"
    if not lease.holder or now - lease.since >= lease_seconds:
        return "take"
    return "wait"


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElection:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        identity: str,
        *,
        name: str = LEASE_NAME,
        lease_seconds: float = 15.0,
        renew_seconds: float = 5.0,
    ) -> None:
        self.client, self.namespace, self.identity, self.name = client, namespace, identity, name
        self.lease_seconds, self.renew_seconds = lease_seconds, renew_seconds
        self._seen: Observed | None = None
        self._renewed_at: float | None = None  # our monotonic time of the last successful write

    def is_leader(self) -> bool:
        """Held, and renewed recently enough that nobody else can have taken it yet."""
        if self._renewed_at is None:
            return False
        return time.monotonic() - self._renewed_at < self.lease_seconds - self.renew_seconds / 2

    async def run(self) -> None:
        """Try to acquire or renew every renew_seconds, for ever (cancel to stop)."""
        while True:
            try:
                await self.try_once()
            except ApiError as error:
                logger.warning("leader election: %s", error)
            await asyncio.sleep(self.renew_seconds)

    async def try_once(self) -> bool:
        now = time.monotonic()
        body = await self.client.get(LEASES, self.namespace, self.name)
        if body is not None:
            record = body.get("spec") or {}
            holder, renew = record.get("holderIdentity"), record.get("renewTime")
            version = (body.get("metadata") or {}).get("resourceVersion")
            seen = self._seen
            changed = seen is None or (seen.holder, seen.renew_time) != (holder, renew)
            self._seen = Observed(holder, renew, version, now if changed else seen.since)  # type: ignore[union-attr]
        step = decide(self._seen if body is not None else None, self.identity, now, self.lease_seconds)
        if step == "wait":
            if self._renewed_at is not None:
                logger.warning("leader election: lost the lease to %s", self._seen and self._seen.holder)
            self._renewed_at = None
            return False
        stamp = _micro_time()
        spec: dict[str, Any] = {"holderIdentity": self.identity, "renewTime": stamp}
        try:
            if step == "create":
                lease = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {**spec, "leaseDurationSeconds": int(self.lease_seconds), "acquireTime": stamp},
                }
                if not await self.client.create(LEASES, lease):
                    return False  # another replica created it first: its record decides next time
            else:
                if step == "take":
                    spec["acquireTime"] = stamp
                    spec["leaseDurationSeconds"] = int(self.lease_seconds)
                    logger.info("leader election: taking the lease from %s", self._seen and self._seen.holder)
                # The resourceVersion makes two replicas that both saw it expire race safely (409).
                meta = {"resourceVersion": self._seen.resource_version} if self._seen else {}
                await self.client.patch(LEASES, self.namespace, self.name, {"metadata": meta, "spec": spec})
        except ApiError as error:
            if error.status == 409:
                self._renewed_at = None
                return False
            raise
        if self._renewed_at is None:
            logger.info("leader election: %s leads", self.identity)
        self._renewed_at = now
        return True
