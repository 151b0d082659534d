"""The operator's API client: credentials re-read on a 401 (issue 16, item 9), no NaN sent."""

from __future__ import annotations

import math
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from rlhf_operator.api_ref import CONFIGMAPS
from rlhf_operator.controller.kube_client import ApiError, Connection, KubeClient

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
