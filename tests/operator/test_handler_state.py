"""The kopf shell's own state (issue 23): refused status writes back off doubling (item 3), and a
run's state is forgotten by uid, not by name (item 9). One reconcile pass at a time, against a
client that answers as a real API server would in each case."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from rlhf_operator.controller import handlers
from rlhf_operator.controller.kube_client import ApiError
from rlhf_operator.settings import OperatorSettings

from .conftest import base_run

KEY = ("team", "demo")


class RefusingStatus:
    """Creates and patches succeed (the answer echoes the body); a status patch is refused (422),
    as a real API server refuses one beyond the CRD's schema."""

    def __init__(self) -> None:
        self.status_patches = 0

    async def create(self, api: Any, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "metadata": {**body["metadata"], "uid": "child", "resourceVersion": "1"}}

    async def patch(self, api: Any, namespace: Any, name: Any, body: Any, subresource: str | None = None) -> Any:
        if subresource == "status":
            self.status_patches += 1
            raise ApiError(422, "RLHFRun.rlhf.dev is invalid: status.stages[0].resumedFromStep: Invalid value")
        return {}

    async def get(self, *_: Any, **__: Any) -> None:
        return None

    async def list(self, *_: Any, **__: Any) -> list[Any]:
        return []

    async def delete(self, *_: Any, **__: Any) -> None:
        return None


class Queue:
    def __init__(self) -> None:
        self.added: list[Any] = []
        self.forgotten: list[Any] = []

    def add(self, key: Any, delay: float = 0.0) -> None:
        self.added.append(key)

    def forget(self, key: Any) -> None:
        self.forgotten.append(key)


def runtime(client: Any) -> handlers.Runtime:
    found = handlers.Runtime(settings=OperatorSettings(metrics_port=0), tuning=handlers.Tuning(), client=client)
    found.queue = Queue()
    return found


def body(uid: str) -> dict[str, Any]:
    run = copy.deepcopy(base_run("demo"))
    run["metadata"].update(uid=uid, generation=1, resourceVersion="1")
    return run


def test_refused_status_writes_back_off_doubling_to_five_minutes() -> None:
    """Old code: the refusal count was cleared before the status patch, so every refused patch
    was retried after 5 s, for ever."""
    client = RefusingStatus()
    state = runtime(client)
    state.runs[KEY] = body("uid-1")

    async def passes(count: int) -> list[float | None]:
        return [await handlers.reconcile_run(state, KEY) for _ in range(count)]

    delays = asyncio.run(passes(9))
    assert delays == [5, 10, 20, 40, 80, 160, 300, 300, 300], delays
    assert client.status_patches == 9


def test_a_late_deleted_event_does_not_forget_the_recreated_namesake() -> None:
    """Old code: the DELETED event of the old uid dropped the new run's body, its expectations,
    its refusal count and its queue entry."""
    state = runtime(RefusingStatus())
    state.runs[KEY] = body("uid-new")
    state.refusals[KEY] = 3
    state.expected[KEY] = {"demo-sft-1": 1e12}
    state.written["uid-old"] = ("7", {})
    memo = {"rlhf": state}

    deleted = body("uid-old")
    asyncio.run(handlers.run_event(event={"type": "DELETED"}, body=deleted, memo=memo))  # type: ignore[arg-type]

    assert state.runs[KEY]["metadata"]["uid"] == "uid-new"
    assert state.refusals[KEY] == 3 and state.expected[KEY] == {"demo-sft-1": 1e12}
    assert KEY not in state.queue.forgotten
    assert "uid-old" not in state.written  # what was the deleted uid's is gone
    # its own DELETED does forget it
    asyncio.run(handlers.run_event(event={"type": "DELETED"}, body=body("uid-new"), memo=memo))  # type: ignore[arg-type]
    assert KEY not in state.runs and KEY not in state.refusals and KEY in state.queue.forgotten
