"""`python -m rlhf_operator.finalizer_sweep`: remove the operator's finalizer from every stage job.

The Helm chart runs this as a pre-delete hook (templates/uninstall-hook.yaml) on `helm
uninstall`. Each stage job carries `rlhf.dev/stage-outcome` until the operator has recorded its
outcome; with the operator gone nothing would remove it, so a job deleted later (its run's
deletion, a TTL, a namespace being deleted) would stay Terminating, and its namespace with it.
The operator itself releases a job as soon as the job is deleted and its outcome is in the
run's status; this sweep is for what is left when the operator leaves for good.

Scope: the namespaces in RLHF_WATCH_NAMESPACES (the operator's own setting), or every
namespace when it is empty. Only stage jobs (the `rlhf.dev/run` label) and only this finalizer
are touched; a job kind whose CRD is not installed is skipped. Idempotent: run it again and it
finds nothing to do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rlhf_api.naming import RUN_LABEL

from .controller.kube_client import ApiError, Connection, KubeClient
from .launchers import KUBERNETES_LAUNCHERS, Launcher, release_patch
from .settings import OperatorSettings

logger = logging.getLogger(__name__)

_CONFLICT_RETRIES = 3


def _held_stage_jobs(launcher: Launcher, items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Stage jobs still holding the operator's finalizer (label checked here too: the API filters,
    an emulator may not)."""
    return [
        body
        for body in items
        if RUN_LABEL in ((body.get("metadata") or {}).get("labels") or {}) and launcher.observe(body).held
    ]


async def _release(client: KubeClient, launcher: Launcher, body: Mapping[str, Any]) -> bool:
    """Patch the finalizer away; on a conflict (the job changed meanwhile) read it again and retry."""
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace"), str(meta.get("name"))
    current: Mapping[str, Any] | None = body
    for _attempt in range(_CONFLICT_RETRIES):
        if current is None or not launcher.observe(current).held:
            return False
        try:
            await client.patch(launcher.api, namespace, name, release_patch(launcher.observe(current)))
            return True
        except ApiError as error:
            if error.status == 404:
                return False
            if error.status != 409:
                raise
        current = await client.get(launcher.api, namespace, name)
    raise RuntimeError(f"{namespace}/{name}: still changing after {_CONFLICT_RETRIES} tries")


async def sweep(client: KubeClient, namespaces: Sequence[str]) -> list[str]:
    """Release every held stage job in `namespaces` (empty: all); returns `kind namespace/name` lines."""
    released: list[str] = []
    for launcher in KUBERNETES_LAUNCHERS.values():
        scopes: list[str | None] = [*namespaces] or [None]  # None: every namespace
        for namespace in scopes:
            try:
                items = await client.list(launcher.api, namespace, label_selector=RUN_LABEL)
            except ApiError as error:
                if error.status == 404:  # this job kind's CRD is not installed
                    continue
                raise
            for body in _held_stage_jobs(launcher, items):
                if await _release(client, launcher, body):
                    meta = body.get("metadata") or {}
                    released.append(f"{launcher.kind} {meta.get('namespace')}/{meta.get('name')}")
    return released


async def _main(namespaces: Sequence[str], connection: Connection) -> list[str]:
    client = KubeClient(connection)
    try:
        return await sweep(client, namespaces)
    finally:
        await client.close()


def main(env: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = OperatorSettings.from_env(os.environ if env is None else env)
    released = asyncio.run(_main(settings.watch_namespaces, Connection.from_environment()))
    for line in released:
        logger.info("released %s", line)
    where = ", ".join(settings.watch_namespaces) or "all namespaces"
    logger.info("%d stage job(s) released in %s", len(released), where)
    return 0


if __name__ == "__main__":
    sys.exit(main())
