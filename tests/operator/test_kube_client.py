"""The operator's API client: credentials re-read on a 401 (issue 16, item 9), no NaN sent."""

from __future__ import annotations

import json
import math
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from rlhf_operator.api_ref import CONFIGMAPS
from rlhf_operator.controller.kube_client import ApiError, Connection, KubeClient

from tests.support.tls import write_ca_and_server_cert, write_client_cert

pytestmark = pytest.mark.asyncio


async def _server(valid_token: list[str]) -> TestServer:
    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {valid_token[0]}":
            return web.json_response({"kind": "Status", "code": 401, "message": "Unauthorized"}, status=401)
        return web.json_response({"metadata": {"name": request.match_info["name"]}})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/team/configmaps/{name}", handler)
    server = TestServer(app)
    await server.start_server()
    return server


async def test_a_rotated_token_is_read_again_on_401() -> None:
    valid = ["one"]
    server = await _server(valid)
    reads: list[str] = []

    def reload() -> Connection:
        reads.append(valid[0])
        return Connection(str(server.make_url("")).rstrip("/"), {"Authorization": f"Bearer {valid[0]}"}, refresh=reload)

    client = KubeClient(reload())
    try:
        assert (await client.get(CONFIGMAPS, "team", "a") or {})["metadata"]["name"] == "a"
        valid[0] = "two"  # the token file was rotated (or an exec plugin's token expired)
        assert (await client.get(CONFIGMAPS, "team", "b") or {})["metadata"]["name"] == "b"
        assert reads == ["one", "two"]
        assert client.connection.headers["Authorization"] == "Bearer two"
    finally:
        await client.close()
        await server.close()


async def test_without_a_way_to_refresh_a_401_is_an_error() -> None:
    server = await _server(["good"])
    client = KubeClient(Connection(str(server.make_url("")).rstrip("/"), {"Authorization": "Bearer bad"}))
    try:
        with pytest.raises(ApiError) as raised:
            await client.get(CONFIGMAPS, "team", "a")
        assert raised.value.status == 401 and not raised.value.transient
    finally:
        await client.close()
        await server.close()


async def test_a_non_finite_number_is_never_sent() -> None:
    client = KubeClient(Connection("http://127.0.0.1:9", {}))
    body: dict[str, Any] = {"metadata": {"name": "x", "namespace": "team"}, "data": {"loss": math.nan}}
    with pytest.raises(ApiError) as raised:
        await client.create(CONFIGMAPS, body)
    assert raised.value.status == 400 and "non-finite" in str(raised.value)
    await client.close()


async def test_a_kubeconfig_client_certificate_authenticates(tmp_path: Path) -> None:
    """A kubeconfig user with client-certificate/client-key (no token): the TLS handshake carries it."""
    ca, cert, key = write_ca_and_server_cert(tmp_path)
    client_cert, client_key = write_client_cert(tmp_path, "rlhf-operator")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    context.verify_mode = ssl.CERT_REQUIRED  # the API server's client-certificate authenticator
    context.load_cert_chain(cert, key)

    async def handler(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(item[0] for item in (peer or {}).get("subject", ()))
        return web.json_response({"metadata": {"name": request.match_info["name"], "user": subject.get("commonName")}})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/team/configmaps/{name}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=context)
    cluster = {"server": f"https://127.0.0.1:{server.port}", "certificate-authority": str(ca)}
    user = {"client-certificate": str(client_cert), "client-key": str(client_key)}
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    (tmp_path / "config").write_text(json.dumps(kubeconfig))
    client = KubeClient(Connection.from_environment({"KUBECONFIG": str(tmp_path / "config")}, str(tmp_path / "none")))
    try:
        answer = await client.get(CONFIGMAPS, "team", "a") or {}
        assert answer["metadata"] == {"name": "a", "user": "rlhf-operator"}
        assert "Authorization" not in client.connection.request_headers()
    finally:
        await client.close()
        await server.close()
