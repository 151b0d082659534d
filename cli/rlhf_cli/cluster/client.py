"""Reads for `rlhf status` / `rlhf logs` with the kubernetes client: I/O only, no decisions.

Connection like kubectl: --kubeconfig, else $KUBECONFIG (a colon-separated list is merged),
else ~/.kube/config; --context; the namespace from -n, else the context's, else `default`.
Inside a pod without a kubeconfig, the service account.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from rlhf_api.naming import job_name
from rlhf_api.spec import GROUP, PLURAL, VERSION
from rlhf_operator.api_ref import ApiRef
from rlhf_operator.launchers import Launcher, launcher_of
from rlhf_operator.pod_result import label_selector, matches
from rlhf_operator.reconcile.status_store import load_status

from .view import Observed, current_stage

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class NotFound(LookupError):
    pass


def connect(kubeconfig: str | None = None, context: str | None = None) -> tuple[client.ApiClient, str]:
    """(API client, default namespace), as kubectl would pick them."""
    files = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    no_kubeconfig = kubeconfig is None and "KUBECONFIG" not in os.environ and not os.path.exists(files)
    if no_kubeconfig and SERVICE_ACCOUNT_NAMESPACE.exists():  # in a pod: its service account
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration), SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    try:
        api = config.new_client_from_config(config_file=files, context=context)
        contexts, active = config.list_kube_config_contexts(config_file=files)
    except (config.ConfigException, OSError) as error:
        raise ConnectionError(f"cannot load a kubeconfig ({files}): {error}") from None
    if context is not None:
        active = next((c for c in contexts if c.get("name") == context), active)
    return api, (active or {}).get("context", {}).get("namespace") or "default"


class Cluster:
    """One API connection and the namespace commands default to."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        self.api, self.default_namespace = connect(kubeconfig, context)
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def _get(self, api: ApiRef, namespace: str, name: str) -> dict[str, Any] | None:
        """A custom object, or None when there is none (404)."""
        try:
            found = self.custom.get_namespaced_custom_object(api.group, api.version, namespace, api.plural, name)
            return cast(dict[str, Any], found)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def run(self, namespace: str, name: str) -> dict[str, Any]:
        found = self._get(ApiRef(GROUP, VERSION, PLURAL), namespace, name)
        if found is None:
            raise NotFound(f"rlhfrun {name} not found in namespace {namespace}")
        return found

    def watch_run(self, namespace: str, name: str) -> Iterator[dict[str, Any]]:
        """The run now, then each new version as the API announces it (a watch, re-opened when
        the server ends it; after a 410 Gone, from a fresh read). Ends only when the run is deleted."""
        while True:
            run = self.run(namespace, name)
            yield run
            version = (run.get("metadata") or {}).get("resourceVersion")
            stream = watch.Watch().stream(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                field_selector=f"metadata.name={name}",
                **({"resource_version": version} if version else {}),
            )
            try:
                for event in stream:
                    found = event.get("object")
                    if not isinstance(found, dict) or (found.get("metadata") or {}).get("name") != name:
                        continue  # the API filters by name; an emulator may not
                    if event.get("type") == "DELETED":
                        raise NotFound(f"rlhfrun {name} was deleted")
                    yield found
            except ApiException as error:
                if error.status != 410:
                    raise
            finally:
                stream.close()

    def master_pod(self, namespace: str, launcher: Launcher, job: str) -> dict[str, Any] | None:
        selector = launcher.master_pod_selector(job)
        # Raw JSON, not the client's models: they reject pods missing fields the reads never use.
        response: Any = self.core.list_namespaced_pod(
            namespace, label_selector=label_selector(selector), _preload_content=False
        )
        pods = json.loads(response.data)
        # The API filters by the selector; check again (an emulator may not).
        found = [p for p in pods.get("items") or [] if matches((p.get("metadata") or {}).get("labels") or {}, selector)]
        found.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
        return found[-1] if found else None

    def observe(self, namespace: str, name: str) -> Observed:
        """The run, its current stage's job and that job's Master pod."""
        run = self.run(namespace, name)
        stage = current_stage(load_status(run.get("status")))
        if stage is None or not stage.job_name:
            return Observed(run)
        launcher = launcher_of(run)
        job = self._get(launcher.api, namespace, stage.job_name)
        pod = self.master_pod(namespace, launcher, stage.job_name) if job is not None else None
        return Observed(run, job, pod)

    def stage_pod(self, namespace: str, name: str, stage: str | None, attempt: int | None) -> tuple[str, str, str]:
        """(pod, container, stage) of a stage's Master pod: the latest attempt unless one is named."""
        run = self.run(namespace, name)
        status = load_status(run.get("status"))
        launcher = launcher_of(run)
        wanted = stage or status.current_stage
        entry = next((s for s in status.stages if s.name == wanted), None)
        if entry is None:
            stages = ", ".join(s.name for s in status.stages) or "none yet"
            raise NotFound(f"rlhfrun {name} has no stage {wanted!r} in its status (stages: {stages})")
        attempt = attempt or entry.attempts
        if attempt < 1:
            raise NotFound(f"stage {entry.name} of rlhfrun {name} has not started a job yet")
        job = entry.job_name if attempt == entry.attempts and entry.job_name else job_name(name, entry.name, attempt)
        pod = self.master_pod(namespace, launcher, job)
        if pod is None:
            raise NotFound(f"no Master pod for job {job} (not started yet, or deleted with the job)")
        return str(pod["metadata"]["name"]), launcher.result_container, entry.name

    def log_lines(
        self, namespace: str, pod: str, container: str, follow: bool, tail: int | None, timestamps: bool = False
    ) -> Iterator[str]:
        """The pod's log, line by line; with follow, until the container ends; with timestamps,
        each line after the time it was logged (RFC 3339) and a space."""
        kwargs: Mapping[str, Any] = {
            "container": container,
            **({"tail_lines": tail} if tail is not None else {}),
            **({"timestamps": True} if timestamps else {}),
        }
        if follow:
            yield from watch.Watch().stream(self.core.read_namespaced_pod_log, pod, namespace, follow=True, **kwargs)
            return
        text: str = self.core.read_namespaced_pod_log(pod, namespace, **kwargs)
        yield from text.splitlines()
