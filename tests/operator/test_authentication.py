"""The operator authenticates as every Kubernetes client does (issue 23, item 1).

Its connection is built as the process builds it (`Connection.from_environment`): from a
kubeconfig with a `token`, and from an in-cluster service account (token and CA files, the
KUBERNETES_SERVICE_HOST/PORT environment) against the emulator serving TLS. The emulator
accepts only the operator's ServiceAccount token (and the tests' admin token): the quickstart
run Succeeds only if every write of the operator carries the token. On the code before this
fix the operator's own writes went out anonymous (401) and no run got a status.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import RawTestServer
from rlhf_operator.api_ref import CONFIGMAPS
from rlhf_operator.controller.kube_client import ApiError, Connection, KubeClient
from rlhf_operator.finalizer_sweep import _main as sweep_main

from tests.support.tls import write_ca_and_server_cert

from .conftest import NAMESPACE, Cluster, OperatorThread, base_run, wait_for, write_kubeconfig
from .emulator import Emulator
from .enforcement import ADMIN_TOKEN, OPERATOR_TOKEN, SWEEP_TOKEN

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


async def quickstart(cluster: Cluster, name: str = "demo") -> None:
    """sft -> reward -> ppo, the tests playing the training operator: the run Succeeds."""
    await cluster.apply(base_run(name))
    for stage in ("sft", "reward", "ppo"):
        job = f"{name}-{stage}-1"
        await wait_for(lambda job=job: job in cluster.job_names(), what=f"job {job}")
        await cluster.finish_stage(job)
    await wait_for(lambda: cluster.status(name).get("phase") == "Succeeded", what=f"{name} Succeeded")


def agents(kmock: Emulator) -> set[str]:
    """Which programs' requests the emulator answered (the operator's own client: "operator")."""
    return {t[4] for t in kmock.tally}


async def test_quickstart_with_a_kubeconfig_token(
    cluster: Cluster, tmp_path: Path, tls: tuple[Path, ssl.SSLContext, ssl.SSLContext]
) -> None:
    url = str(cluster.kmock.url).rstrip("/")
    kubeconfig = write_kubeconfig(tmp_path / "config", url, OPERATOR_TOKEN, ca=str(tls[0] / "ca.crt"))
    thread = await asyncio.to_thread(OperatorThread(url, environ={"KUBECONFIG": kubeconfig}).start)
    try:
        await quickstart(cluster)
    finally:
        await asyncio.to_thread(thread.stop)
    assert "operator" in agents(cluster.kmock)  # the operator's own writes got through
    assert cluster.kmock.denied == []


async def test_a_kubeconfig_token_file_and_an_exec_plugin(tmp_path: Path) -> None:
    """`tokenFile` and an exec credential plugin give the header the kubernetes client sends."""
    (tmp_path / "token").write_text("from-a-file\n")
    plugin = tmp_path / "credential-plugin"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": "from-a-plugin"},
    }
    plugin.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(credential))})\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    users = {
        "file": {"tokenFile": str(tmp_path / "token")},
        "exec": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin)}},
    }
    for user, expected in (("file", "Bearer from-a-file"), ("exec", "Bearer from-a-plugin")):
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
            "users": [{"name": "u", "user": users[user]}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
        path = tmp_path / f"{user}.kubeconfig"
        path.write_text(json.dumps(config))
        connection = Connection.from_environment({"KUBECONFIG": str(path)}, str(tmp_path / "no-service-account"))
        assert connection.request_headers()["Authorization"].strip() == expected, user


# --- in cluster: the service account's token and CA, the API server over TLS -----------------


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, ssl.SSLContext, ssl.SSLContext]:
    """(the service-account folder holding ca.crt and token, the server's TLS context, a client's)."""
    service_account = tmp_path / "serviceaccount"
    ca, _, _ = write_ca_and_server_cert(service_account)
    (service_account / "server.crt").rename(tmp_path / "server.crt")
    (service_account / "server.key").rename(tmp_path / "server.key")
    (service_account / "token").write_text(OPERATOR_TOKEN)
    (service_account / "namespace").write_text("rlhf-system")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    client = ssl.create_default_context(cafile=str(ca))
    return service_account, server, client


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any], tls: tuple[Path, ssl.SSLContext, ssl.SSLContext]) -> dict[str, Any]:
    """The emulator over TLS (its certificate names 127.0.0.1, signed by the service account's CA)."""
    _, server_context, client_context = tls

    class TLSServer(RawTestServer):
        async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
            await super().start_server(loop=loop, ssl=server_context, **kwargs)

    def admin_session(url: Any) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(ssl=client_context)
        return aiohttp.ClientSession(url, connector=connector, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    return {**kmock_options, "server_cls": TLSServer, "client_fct": admin_session}


@pytest_asyncio.fixture
async def in_cluster(
    cluster: Cluster, tls: tuple[Path, ssl.SSLContext, ssl.SSLContext]
) -> AsyncIterator[tuple[dict[str, str], str]]:
    """The environment and service-account folder of a pod whose API server is the emulator."""
    port = cluster.kmock.servers[0].port
    yield {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port)}, str(tls[0])


async def test_quickstart_with_the_in_cluster_service_account(
    cluster: Cluster, in_cluster: tuple[dict[str, str], str]
) -> None:
    environ, service_account = in_cluster
    url = str(cluster.kmock.url).rstrip("/")
    assert url.startswith("https://")
    operator = OperatorThread(url, environ=environ, service_account_dir=service_account)
    thread = await asyncio.to_thread(operator.start)
    try:
        await quickstart(cluster)
    finally:
        await asyncio.to_thread(thread.stop)
    assert "operator" in agents(cluster.kmock)
    assert cluster.kmock.denied == []


async def test_a_rotated_service_account_token_is_read_again(
    cluster: Cluster, in_cluster: tuple[dict[str, str], str]
) -> None:
    """The kubelet rewrites the token file; the old token stops working (401): the client reads
    the file again and goes on, without a restart."""
    environ, service_account = in_cluster
    client = KubeClient(Connection.from_environment(environ, service_account))
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": NAMESPACE}}
    try:
        assert await client.create(CONFIGMAPS, configmap)
        (Path(service_account) / "token").write_text("rotated-token")
        cluster.kmock.tokens["rotated-token"] = cluster.kmock.tokens.pop(OPERATOR_TOKEN)
        assert await client.create(CONFIGMAPS, {**configmap, "metadata": {"name": "b", "namespace": NAMESPACE}})
        assert client.connection.request_headers()["Authorization"] == "bearer rotated-token"
        # A token nobody accepts stays an error (401), not a loop.
        cluster.kmock.tokens.pop("rotated-token")
        with pytest.raises(ApiError) as refused:
            await client.get(CONFIGMAPS, NAMESPACE, "a")
        assert refused.value.status == 401
        cluster.kmock.denied.clear()
    finally:
        await client.close()


async def test_the_finalizer_sweep_authenticates_as_the_uninstall_hook(
    cluster: Cluster, in_cluster: tuple[dict[str, str], str]
) -> None:
    """`python -m rlhf_operator.finalizer_sweep` connects as the operator does, with the hook's token."""
    environ, service_account = in_cluster
    (Path(service_account) / "token").write_text(SWEEP_TOKEN)
    released = await sweep_main([], Connection.from_environment(environ, service_account))
    assert released == []
    assert cluster.kmock.denied == []
    assert {t[:2] for t in cluster.kmock.tally} >= {("list", "pytorchjobs"), ("list", "trainjobs")}
