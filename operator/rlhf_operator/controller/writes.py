"""Applying a pass's child writes, and what the API server's answers mean (issue 16, items 2, 4).

- 409 on a job create means "a job of that name exists", not "mine exists": it is read back and
  taken as this run's only when this run's uid controls it (controller-runtime's IsControlledBy);
  otherwise it is a foreign job (reconcile/blocked.py).
- A non-transient answer (4xx: 400, 403, 404, 422) to a create or a job patch is a refusal: the
  pass is recomputed with it (the child is not counted as made) and the status says so. Transient
  ones (0 = no answer, 429, 5xx) are raised: the work queue retries the run with a capped backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..api_ref import ApiRef
from ..launchers import KUBERNETES_LAUNCHERS
from ..observed_job import ObservedJob
from ..reconcile import Create, Outcome, PatchJob
from ..reconcile.blocked import Blocked
from . import metrics
from .kube_client import ApiError

if TYPE_CHECKING:
    from .handlers import RunKey, Runtime


def controller_uid(body: Mapping[str, Any]) -> str | None:
    """The uid of the object's controller ownerReference (None: no controller)."""
    refs = (body.get("metadata") or {}).get("ownerReferences") or []
    return next((str(ref.get("uid")) for ref in refs if ref.get("controller")), None)


def is_controlled_by(body: Mapping[str, Any], uid: str) -> bool:
    return bool(uid) and controller_uid(body) == uid


def split_by_owner(jobs: Mapping[str, ObservedJob], uid: str) -> tuple[dict[str, ObservedJob], dict[str, ObservedJob]]:
    """(the jobs this run controls, the foreign ones) by the controller ownerReference's uid."""
    mine = {name: job for name, job in jobs.items() if uid and job.owner_uid == uid}
    return mine, {name: job for name, job in jobs.items() if name not in mine}


def is_job(api: ApiRef) -> bool:
    return any(api == launcher.api for launcher in KUBERNETES_LAUNCHERS.values())


def refusal_text(verb: str, kind: str, name: str, error: ApiError) -> str:
    return f"{verb} {kind} {name} refused by the API server (HTTP {error.status}): {error.message}"


async def apply_children(runtime: Runtime, key: RunKey, uid: str, outcome: Outcome, known: Blocked) -> Blocked:
    """Apply the outcome's creates and job patches; return what it newly found blocked."""
    refused: dict[str, str] = {}
    foreign: dict[str, ObservedJob] = {}
    supporting = [a for a in outcome.writes if isinstance(a, Create) and not is_job(a.api)]
    # The volume and the configs go first, concurrently; the jobs (which mount them) after.
    answers = await asyncio.gather(*(_create(runtime, key, uid, a) for a in supporting))
    for made, answer in zip(supporting, answers, strict=True):
        if isinstance(answer, str):
            refused[made.name] = answer
    if refused:
        return Blocked(refused=refused)
    for action in outcome.writes:
        if isinstance(action, Create) and is_job(action.api):
            answer = await _create(runtime, key, uid, action)
            if isinstance(answer, str):
                refused[action.name] = answer
            elif isinstance(answer, ObservedJob):
                foreign[action.name] = answer
        elif isinstance(action, PatchJob):
            metrics.API_WRITES.labels(verb="patch").inc()
            try:
                await runtime.client.patch(action.api, key[0], action.name, action.patch)
            except ApiError as error:
                if error.transient or error.status == 409:
                    raise
                refused[action.name] = refusal_text("patch of", "job", action.name, error)
    refused = {k: v for k, v in refused.items() if known.refused.get(k) != v}
    foreign = {k: v for k, v in foreign.items() if k not in known.foreign}
    return Blocked(foreign=foreign, refused=refused)


async def _create(runtime: Runtime, key: RunKey, uid: str, action: Create) -> str | ObservedJob | None:
    """None: created (or this run's already); a str: refused (why); an ObservedJob: a foreign
    job holds the name."""
    metrics.API_WRITES.labels(verb="create").inc()
    kind = str(action.body.get("kind") or action.api.plural)
    try:
        created = await runtime.client.create(action.api, action.body)
    except ApiError as error:
        if error.transient:
            raise
        return refusal_text("create of", kind, action.name, error)
    if not created and is_job(action.api):
        found = await runtime.client.get(action.api, key[0], action.name)
        if found is None:
            raise ApiError(409, f"job {action.name} exists but cannot be read back; retrying")
        if not is_controlled_by(found, uid):
            launcher = next(x for x in KUBERNETES_LAUNCHERS.values() if x.api == action.api)
            return launcher.observe(found)
    if is_job(action.api):
        # Until the watch reports it, the job counts as there (no re-create on the next pass).
        deadline = time.monotonic() + runtime.tuning.expectation_seconds
        runtime.expected.setdefault(key, {})[action.name] = deadline
    return None
