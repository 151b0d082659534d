"""kmock harness: the emulator over HTTP, the real kopf operator in its own thread, and a
simulated training operator (the tests patch job conditions and create the Master pod)."""

from __future__ import annotations

import asyncio
import copy
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
import pytest_asyncio
import yaml
from rlhf_api.result import StageResult
from rlhf_operator.controller import handlers  # registers the operator's handlers
from rlhf_operator.controller.kube_client import SERVICE_ACCOUNT_DIR, Connection, KubeClient, load_configuration
from rlhf_operator.settings import OperatorSettings

from .emulator import PYTORCHJOBS, RLHFRUNS, TRAINJOBS, Emulator
from .enforcement import ADMIN_TOKEN, OPERATOR_TOKEN

NAMESPACE = "team"
TEST_TUNING = handlers.Tuning(
    concurrency=8,
    error_backoff=0.05,
    error_backoff_max=0.5,
    expectation_seconds=5.0,
    api_error_backoffs=(0.05, 0.1, 0.2, 0.3, 0.5),
    watch_reconnect_backoff=0.05,
    refusal_backoff=0.3,
    refusal_backoff_max=1.0,
)

# Where the operator thread's credentials come from: the environment (KUBECONFIG, or
# KUBERNETES_SERVICE_HOST/PORT) and the service-account directory it would have in a pod.
_server: dict[str, Any] = {}


def write_kubeconfig(path: Path, url: str, token: str, namespace: str = NAMESPACE, ca: str | None = None) -> str:
    """A kubeconfig whose current context reaches `url` with a bearer token (and a CA for https)."""
    cluster: dict[str, str] = {"server": url, **({"certificate-authority": ca} if ca else {})}
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": cluster}],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "user", "namespace": namespace}}],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(kubeconfig))
    return str(path)


def connection_info(configuration: Any) -> kopf.ConnectionInfo:
    """kopf's view of a kubernetes Configuration, as kopf's own `login_via_client` reads it."""
    header = next(iter(configuration.auth_settings().values()), {}).get("value") or ""
    scheme, _, token = header.partition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def client_as(url: str, token: str = OPERATOR_TOKEN) -> KubeClient:
    """A KubeClient connected as the process connects (Connection.from_environment), from a
    kubeconfig reaching `url` with `token` (the operator's ServiceAccount by default)."""
    folder = Path(tempfile.mkdtemp(prefix="rlhf-operator-kubeconfig-"))
    kubeconfig = write_kubeconfig(folder / "kubeconfig", url, token)
    return KubeClient(Connection.from_environment({"KUBECONFIG": kubeconfig}, str(folder / "no-service-account")))


@kopf.on.login(registry=kopf.get_default_registry())
def _login_to_emulator(**_: Any) -> kopf.ConnectionInfo:
    """kopf's client logs in with the same credentials as the operator's own (load_configuration)."""
    return connection_info(load_configuration(_server["environ"], _server["service_account_dir"]))


def base_run(name: str = "demo", **spec_overrides: Any) -> dict[str, Any]:
    quick = {"retries": 2, "retryBackoffSeconds": 0}
    spec: dict[str, Any] = {
        "model": {"name": "builtin:tiny-llama"},
        "sft": {"dataset": {"source": "builtin:arithmetic"}, **quick},
        "reward": {"dataset": {"source": "builtin:arithmetic", "format": "preference"}, **quick},
        "ppo": {"dataset": {"source": "builtin:arithmetic"}, **quick},
        "placement": {"gpusPerWorker": 0, "workers": 1},
        "storage": {"size": "1Gi"},
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "rlhf.dev/v1alpha1",
        "kind": "RLHFRun",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


def dpo_run(name: str = "dpo-demo") -> dict[str, Any]:
    run = base_run(name)
    spec = run["spec"]
    del spec["reward"], spec["ppo"]
    spec["pipeline"] = ["sft", "dpo"]
    spec["dpo"] = {"dataset": {"source": "builtin:arithmetic", "format": "preference"}, "retries": 1}
    return run


class OperatorThread:
    """kopf.operator() on its own event loop in a thread (kopf cancels foreign tasks at exit)."""

    def __init__(
        self,
        url: str,
        settings: OperatorSettings | None = None,
        tuning: handlers.Tuning = TEST_TUNING,
        *,
        environ: Mapping[str, str] | None = None,
        service_account_dir: str = SERVICE_ACCOUNT_DIR,
        token: str = OPERATOR_TOKEN,
    ):
        """The operator as its process runs it: its connection built by Connection.from_environment
        from `environ` (default: a kubeconfig reaching `url` with the operator's ServiceAccount
        token) and `service_account_dir`."""
        self.url = url
        self._folder: Path | None = None  # its own kubeconfig's, removed by stop()
        if environ is None:
            self._folder = Path(tempfile.mkdtemp(prefix="rlhf-operator-kubeconfig-"))
            environ = {"KUBECONFIG": write_kubeconfig(self._folder / "kubeconfig", url, token)}
        self.environ = dict(environ)
        self.service_account_dir = service_account_dir
        self.settings = settings or OperatorSettings(metrics_port=0)
        self.tuning = tuning
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self.cpu_seconds = 0.0

    def _main(self) -> None:
        started = time.thread_time()
        connection = Connection.from_environment(self.environ, self.service_account_dir)
        memo = kopf.Memo(settings=self.settings, tuning=self.tuning, connection=connection)
        try:
            asyncio.run(
                kopf.operator(
                    clusterwide=True,
                    standalone=True,
                    stop_flag=self._stop,
                    ready_flag=self._ready,
                    memo=memo,
                )
            )
        except BaseException as error:  # reported by stop()
            self.error = error
        finally:
            self.cpu_seconds = time.thread_time() - started

    def start(self) -> OperatorThread:
        _server.update(environ=self.environ, service_account_dir=self.service_account_dir)
        self._stop.clear()
        self._ready.clear()
        self._thread = threading.Thread(target=self._main, name="kopf", daemon=True)
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the operator did not start")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(20)
            assert not self._thread.is_alive(), "the operator did not stop"
        self._thread = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    for name in ("kopf", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _admin_session(url: Any) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


@pytest.fixture
def kmock_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Overrides kmock's: our Emulator class (markers can still add options)."""
    # The test's own requests through kmock's client (a user's kubectl, the simulated training
    # operator) carry the admin's token.
    options: dict[str, Any] = {"cls": Emulator, "client_fct": _admin_session}
    for marker in reversed(list(request.node.iter_markers("kmock"))):
        options.update(marker.kwargs)
    return options


class Cluster:
    """The emulator as the tests use it: apply runs, play the training operator, wait."""

    def __init__(self, kmock: Emulator) -> None:
        self.kmock = kmock

    # --- reading ---------------------------------------------------------------------------
    def run(self, name: str) -> dict[str, Any]:
        return self.kmock.objects[RLHFRUNS, NAMESPACE, name].raw

    def status(self, name: str) -> dict[str, Any]:
        return self.run(name).get("status") or {}

    def stage(self, name: str, stage: str) -> dict[str, Any]:
        return next((s for s in self.status(name).get("stages", []) if s["name"] == stage), {})

    def jobs(self, resource: str = PYTORCHJOBS) -> list[dict[str, Any]]:
        return self.kmock.live(resource, NAMESPACE)

    def job_names(self, resource: str = PYTORCHJOBS) -> list[str]:
        return sorted(j["metadata"]["name"] for j in self.jobs(resource))

    def writes(self) -> list[tuple[str, str, str, str, str]]:
        return [t for t in self.kmock.tally if t[0] in ("create", "update", "delete")]

    # --- writing through HTTP, so that watches see it ---------------------------------------
    async def _call(self, method: str, path: str, body: Any, content_type: str = "application/json") -> Any:
        async with self.kmock.request(method, path, json=body, headers={"Content-Type": content_type}) as resp:
            answer = await resp.json()
            assert resp.status < 400, answer
            return answer

    async def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        path = f"/apis/rlhf.dev/v1alpha1/namespaces/{NAMESPACE}/rlhfruns"
        answer: dict[str, Any] = await self._call("POST", path, copy.deepcopy(body))
        return answer

    async def patch_run(self, name: str, patch: dict[str, Any]) -> None:
        path = f"/apis/rlhf.dev/v1alpha1/namespaces/{NAMESPACE}/rlhfruns/{name}"
        await self._call("PATCH", path, patch, "application/merge-patch+json")

    async def delete_run(self, name: str) -> None:
        path = f"/apis/rlhf.dev/v1alpha1/namespaces/{NAMESPACE}/rlhfruns/{name}"
        async with self.kmock.request("DELETE", path) as resp:
            assert resp.status < 400

    async def delete_job(self, job: str, resource: str = PYTORCHJOBS) -> None:
        """A user's `kubectl delete`, or the TTL controller: a held job only gets a deletionTimestamp."""
        group_version, plural = resource.rsplit("/", 1)
        async with self.kmock.request("DELETE", f"/apis/{group_version}/namespaces/{NAMESPACE}/{plural}/{job}") as resp:
            assert resp.status < 400

    async def delete_pod(self, name: str) -> None:
        async with self.kmock.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}") as resp:
            assert resp.status < 400

    def deleting(self, job: str, resource: str = PYTORCHJOBS) -> bool:
        """The job is marked for deletion and still held by a finalizer."""
        meta = self.kmock.objects[resource, NAMESPACE, job].raw.get("metadata") or {}
        return bool(meta.get("deletionTimestamp"))

    async def set_job_condition(self, job: str, condition: str, message: str = "", resource: str = PYTORCHJOBS) -> None:
        group_version, plural = resource.rsplit("/", 1)
        current = self.kmock.objects[resource, NAMESPACE, job].raw
        conditions = [dict(c, status="False") for c in (current.get("status") or {}).get("conditions", [])]
        conditions = [c for c in conditions if c["type"] != condition]
        conditions.append(
            {
                "type": condition,
                "status": "True",
                "reason": f"Job{condition}",
                "message": message,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        )
        if condition in ("Running", "Created"):  # like the training operator: Created stays True
            conditions = [dict(c, status="True") if c["type"] == "Created" else c for c in conditions]
        path = f"/apis/{group_version}/namespaces/{NAMESPACE}/{plural}/{job}/status"
        await self._call("PATCH", path, {"status": {"conditions": conditions}}, "application/merge-patch+json")

    async def create_master_pod(
        self, job: str, result: StageResult | None, resource: str = PYTORCHJOBS, log_tail: str | None = None
    ) -> None:
        trainjob = resource == TRAINJOBS
        labels = (
            {
                "jobset.sigs.k8s.io/jobset-name": job,
                "jobset.sigs.k8s.io/replicatedjob-name": "node",
                "batch.kubernetes.io/job-completion-index": "0",
            }
            if trainjob
            else {"training.kubeflow.org/job-name": job, "training.kubeflow.org/replica-type": "master"}
        )
        terminated: dict[str, Any] = {"exitCode": 0, "reason": "Completed"}
        if result is not None:
            terminated["message"] = result.termination_message()
        elif log_tail is not None:  # FallbackToLogsOnError: the log tail when the trainer died
            terminated.update(message=log_tail, exitCode=1, reason="Error")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{job}-{'node-0-0' if trainjob else 'master-0'}",
                "namespace": NAMESPACE,
                "labels": labels,
            },
            "spec": {"containers": [{"name": "node" if trainjob else "pytorch", "image": "x"}]},
            "status": {
                "containerStatuses": [{"name": "node" if trainjob else "pytorch", "state": {"terminated": terminated}}]
            },
        }
        await self._call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)

    async def finish_stage(
        self, job: str, *, resource: str = PYTORCHJOBS, metrics: dict[str, float] | None = None
    ) -> None:
        """Play the training operator through a successful stage: Created, Running, Succeeded."""
        body = self.kmock.objects[resource, NAMESPACE, job].raw
        stage = body["metadata"]["labels"]["rlhf.dev/stage"]
        run = body["metadata"]["labels"]["rlhf.dev/run"]
        output = f"/workspace/{run}/{stage}"
        result = StageResult(
            stage=stage,
            status="succeeded",
            output_path=output,
            merged_path=f"{output}/merged",
            metrics=metrics or {"loss": 0.5},
        )
        await self.set_job_condition(job, "Created", resource=resource)
        await self.set_job_condition(job, "Running", resource=resource)
        await self.create_master_pod(job, result, resource=resource)
        if resource == TRAINJOBS:  # Trainer v2 reports Complete, the training operator Succeeded
            await self.set_job_condition(job, "Complete", "TrainJob completed", resource=resource)
        else:
            await self.set_job_condition(job, "Succeeded", "PyTorchJob succeeded", resource=resource)

    async def fail_stage(
        self, job: str, message: str = "OOMKilled", resource: str = PYTORCHJOBS, log_tail: str | None = None
    ) -> None:
        await self.set_job_condition(job, "Running", resource=resource)
        if log_tail is not None:
            await self.create_master_pod(job, None, resource=resource, log_tail=log_tail)
        await self.set_job_condition(job, "Failed", message, resource=resource)


async def wait_for(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (KeyError, ValueError, StopIteration) as error:
            last_error = error
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last_error!r})" if last_error else ""))


@pytest_asyncio.fixture
async def cluster(kmock: Emulator, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    kmock.register()
    kmock.objects["v1/namespaces", None, NAMESPACE] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE},
    }
    yield Cluster(kmock)
    # A request the chart's RBAC (or authentication) refused fails the test, unless it expects it.
    if not request.node.get_closest_marker("expect_denied"):
        assert not kmock.denied, f"requests refused by authentication or RBAC: {kmock.denied[:5]}"


@pytest_asyncio.fixture
async def operator(cluster: Cluster) -> AsyncIterator[OperatorThread]:
    url = str(cluster.kmock.url).rstrip("/")
    thread = await asyncio.to_thread(OperatorThread(url).start)
    yield thread
    await asyncio.to_thread(thread.stop)
