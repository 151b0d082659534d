"""A container's log as the kubelet keeps and serves it, for tests of the progress reader.

What the reader meets on a real cluster: RFC3339Nano stamps (`timestamps=true`), `sinceTime`
passed on by the API server in whole seconds (it formats the time it parsed with RFC 3339, no
fraction), `tailLines` counted from the end, then `limitBytes` cutting the answer, mid-line
if need be. Served through a kmock rule (`serve`) or a fake client (`FakeLogClient`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rlhf_api.progress_status import parse_time


def nano(moment: datetime, ns: int = 0) -> str:
    """RFC3339Nano as the kubelet writes it (9 fraction digits here, always)."""
    base = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{moment.microsecond * 1000 + ns:09d}Z"


class KubeletLog:
    def __init__(self) -> None:
        self.lines: list[tuple[datetime, str]] = []
        self.reads: list[dict[str, str]] = []

    def print(self, line: str, at: datetime | None = None) -> None:
        self.lines.append((at or datetime.now(UTC), line))

    def answer(self, params: Mapping[str, str]) -> bytes:
        self.reads.append(dict(params))
        since = parse_time(params.get("sinceTime"))
        if since is not None:
            since = since.replace(microsecond=0)  # the API server keeps whole seconds
        lines = [(t, line) for t, line in self.lines if since is None or t >= since]
        if "tailLines" in params:
            lines = lines[-int(params["tailLines"]) :] if int(params["tailLines"]) else []
        stamped = params.get("timestamps") == "true"
        data = "".join((nano(t) + " " if stamped else "") + line + "\n" for t, line in lines).encode(
            "utf-8", "surrogateescape"
        )
        if "limitBytes" in params:
            data = data[: int(params["limitBytes"])]
        return data

    def serve(self, request: Any) -> bytes:
        """A kmock rule's answer."""
        return self.answer(dict(request.params))


class FakeLogClient:
    """The reader's client (KubeClient's get_text and list), serving one log for any pod."""

    def __init__(self, log: KubeletLog) -> None:
        self.log = log

    async def get_text(self, path: str, params: Mapping[str, str]) -> str:
        return self.log.answer(params).decode("utf-8", errors="replace")

    async def list(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
        return []
