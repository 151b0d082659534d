"""core/v1 Events for the run's transitions, with deterministic names. Pure."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from rlhf_api.spec import API_VERSION, KIND

EVENT_SOURCE = "rlhf-operator"
EventType = Literal["Normal", "Warning"]


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_name(run_name: str, digest: str) -> str:
    """`<run name>.<digest>`, a valid DNS-1123 subdomain for any valid run name: the name is cut
    to 200 characters, and a cut that ends in '.' or '-' would give '..' or '-.' (refused)."""
    prefix = run_name[:200].rstrip(".-") or "run"
    return f"{prefix}.{digest}"


def event_body(
    meta: Mapping[str, Any], key: str, type_: EventType, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """A core/v1 Event named after (run uid, transition key): re-posting the same transition,
    e.g. after a crash between the event and the status patch, is a 409, not a duplicate."""
    run_name = str(meta.get("name"))
    uid = str(meta.get("uid") or "")
    digest = hashlib.sha256(f"{uid}\0{key}".encode()).hexdigest()[:12]
    stamp = rfc3339(now)
    involved = {"apiVersion": API_VERSION, "kind": KIND, "name": run_name}
    if meta.get("namespace"):
        involved["namespace"] = str(meta["namespace"])
    if uid:
        involved["uid"] = uid
    metadata: dict[str, Any] = {"name": event_name(run_name, digest)}
    if meta.get("namespace"):
        metadata["namespace"] = meta["namespace"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": metadata,
        "involvedObject": involved,
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "source": {"component": EVENT_SOURCE},
        "reportingComponent": EVENT_SOURCE,
        "reportingInstance": EVENT_SOURCE,
    }
