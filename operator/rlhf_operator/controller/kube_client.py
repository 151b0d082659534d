"""Thin async Kubernetes API helpers: create-if-absent, merge-patch, list, events.

Uses aiohttp (already in kopf's dependency tree) with the connection settings of the
`kubernetes` client's Configuration (in-cluster service account or kubeconfig), so the
operator's own writes go straight to the API without a thread pool per call.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..api_ref import ApiRef

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "rlhf-operator"


class ApiError(Exception):
    """A non-2xx answer; `status` is the HTTP code (0: no answer at all)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message  # the server's own words (metav1.Status message)

    @property
    def transient(self) -> bool:
        return self.status == 0 or self.status == 429 or self.status >= 500


def object_path(api: ApiRef, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
    root = f"/apis/{api.group}/{api.version}" if api.group else f"/api/{api.version}"
    path = f"{root}/namespaces/{namespace}/{api.plural}" if namespace else f"{root}/{api.plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


# Where the kubelet mounts a pod's service-account token (rotated in place) and the cluster's CA.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def load_configuration(environ: Mapping[str, str] | None = None, service_account_dir: str = SERVICE_ACCOUNT_DIR) -> Any:
    """A `kubernetes.client.Configuration` as every Kubernetes client loads it: the in-cluster
    service account when the pod has one, else the kubeconfig ($KUBECONFIG, read now, or
    ~/.kube/config) with its `token`, `tokenFile`, client certificate, exec plugin or
    auth-provider. The kubernetes client's own loaders do the work (and set its refresh hooks)."""
    from kubernetes import client, config
    from kubernetes.config.incluster_config import InClusterConfigLoader

    environ = os.environ if environ is None else environ
    configuration = client.Configuration()
    try:
        InClusterConfigLoader(
            token_filename=os.path.join(service_account_dir, "token"),
            cert_filename=os.path.join(service_account_dir, "ca.crt"),
            environ=environ,
        ).load_and_set(configuration)
    except config.ConfigException:
        config.load_kube_config(config_file=environ.get("KUBECONFIG") or None, client_configuration=configuration)
    return configuration


def _auth_headers(configuration: Any) -> dict[str, str]:
    """The headers the kubernetes client itself would send: `auth_settings()` runs the
    configuration's `refresh_api_key_hook` first (the in-cluster loader re-reads the token file,
    which the kubelet rotates, every minute; a kubeconfig's exec plugin runs again once its
    credential expires), then names the header (`authorization: Bearer ...`, or `Basic ...`)."""
    headers: dict[str, str] = {}
    for setting in configuration.auth_settings().values():
        if setting.get("in") == "header" and setting.get("value"):
            headers["Authorization" if setting["key"].lower() == "authorization" else setting["key"]] = setting["value"]
    return headers


@dataclass
class Connection:
    server: str
    headers: dict[str, str]  # fixed headers; the credentials' headers come from `credentials`
    ssl_context: ssl.SSLContext | bool | None = None
    # Re-reads the credentials (a rotated service-account token, an exec kubeconfig's new token):
    # called on a 401, so an expired token is replaced instead of failing for ever.
    refresh: Callable[[], Connection] | None = field(default=None, repr=False, compare=False)
    # The credentials' headers, asked for on every request (the kubernetes client's own refresh).
    credentials: Callable[[], dict[str, str]] | None = field(default=None, repr=False, compare=False)
    server_hostname: str | None = None  # a kubeconfig's tls-server-name

    def request_headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, **self.headers}
        if self.credentials is not None:
            headers.update(self.credentials())
        return headers

    @classmethod
    def from_kubernetes_configuration(cls, configuration: Any) -> Connection:
        """Host, credentials and TLS material of a `kubernetes.client.Configuration`.

        The credentials are what the configuration's own `auth_settings()` gives (the token of
        `load_incluster_config()` and of a kubeconfig `token:` is under `BearerToken`, not
        `authorization`), read again on each request; client certificates (a kubeconfig's, an
        exec plugin's) go into the TLS context."""
        context: ssl.SSLContext | None = None
        if str(configuration.host).startswith("https"):
            context = ssl.create_default_context(cafile=configuration.ssl_ca_cert if configuration.verify_ssl else None)
            if not configuration.verify_ssl:  # insecure-skip-tls-verify
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if configuration.cert_file:
                context.load_cert_chain(configuration.cert_file, configuration.key_file)
        return cls(
            server=str(configuration.host).rstrip("/"),
            headers={},
            ssl_context=context,
            credentials=lambda: _auth_headers(configuration),
            server_hostname=getattr(configuration, "tls_server_name", None) or None,
        )

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, service_account_dir: str = SERVICE_ACCOUNT_DIR
    ) -> Connection:
        """In-cluster service account first, then $KUBECONFIG / ~/.kube/config."""
        connection = cls.from_kubernetes_configuration(load_configuration(environ, service_account_dir))
        connection.refresh = functools.partial(cls.from_environment, environ, service_account_dir)
        return connection


class KubeClient:
    """The operator's writes and few reads. One aiohttp session, reused."""

    def __init__(self, connection: Connection, timeout: float = 30.0) -> None:
        self.connection = connection
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        decode: bool = True,
    ) -> dict[str, Any]:
        try:
            return await self._send(method, path, body=body, params=params, content_type=content_type, decode=decode)
        except ApiError as error:
            if error.status != 401 or self.connection.refresh is None:
                raise
        # 401: the token expired or was rotated. Read the credentials again, then retry once.
        logger.info("HTTP 401 from the API server: re-reading the credentials")
        self.connection = await asyncio.to_thread(self.connection.refresh)
        return await self._send(method, path, body=body, params=params, content_type=content_type, decode=decode)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any,
        params: Mapping[str, str] | None,
        content_type: str,
        decode: bool,
    ) -> dict[str, Any]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = self.connection.request_headers()
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            try:
                # A real API server's JSON decoder refuses NaN/Infinity (400, for ever): never send them.
                data = json.dumps(body, allow_nan=False)
            except ValueError as error:
                raise ApiError(400, f"not sent: a non-finite number in the body of {method} {path} ({error})") from None
        try:
            async with self._session.request(
                method,
                self.connection.server + path,
                data=data,
                params=params,
                headers=headers,
                ssl=self.connection.ssl_context if self.connection.ssl_context is not None else True,
                server_hostname=self.connection.server_hostname,
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise ApiError(response.status, _status_message(text))
                # Creates do not need the echoed object: skip decoding it (large job manifests).
                return json.loads(text) if text and decode else {}
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ApiError(0, f"{type(error).__name__}: {error}") from error

    async def create(self, api: ApiRef, body: Mapping[str, Any]) -> bool:
        """Create if absent; False when it already existed (409: deterministic names)."""
        namespace = (body.get("metadata") or {}).get("namespace")
        try:
            await self._request("POST", object_path(api, namespace), body=body, decode=False)
        except ApiError as error:
            if error.status == 409:
                return False
            raise
        return True

    async def patch(
        self, api: ApiRef, namespace: str | None, name: str, patch: Mapping[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        path = object_path(api, namespace, name, subresource)
        return await self._request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def get(self, api: ApiRef, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self._request("GET", object_path(api, namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def list(
        self, api: ApiRef, namespace: str | None, label_selector: str | None = None, field_selector: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else {}
        if field_selector:
            params["fieldSelector"] = field_selector
        answer = await self._request("GET", object_path(api, namespace), params=params or None)
        return list(answer.get("items") or [])

    async def delete(self, api: ApiRef, namespace: str | None, name: str) -> bool:
        """Delete (background propagation); False when it was gone already."""
        try:
            await self._request("DELETE", object_path(api, namespace, name), decode=False)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def get_text(self, path: str, params: Mapping[str, str]) -> str:
        """A plain-text GET (pods/log): the answer as is, not JSON."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        ssl_context = self.connection.ssl_context if self.connection.ssl_context is not None else True
        headers = self.connection.request_headers()
        try:
            url = self.connection.server + path
            async with self._session.get(
                url, params=params, headers=headers, ssl=ssl_context, server_hostname=self.connection.server_hostname
            ) as response:
                text = await response.text(errors="replace")
                if response.status >= 400:
                    raise ApiError(response.status, _status_message(text))
                return text
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ApiError(0, f"{type(error).__name__}: {error}") from error

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _status_message(text: str) -> str:
    try:
        return str(json.loads(text).get("message") or text)[:500]
    except (ValueError, AttributeError):
        return text[:500]
