"""Reward source type remote: score with a server that speaks the protocol in rlhf_api.served.

Items go out in batches of `batchSize`, at most `maxConcurrency` requests at once. A request
that times out, cannot connect, or gets 429/408/5xx is retried `retries` times with
exponential backoff (or the server's Retry-After); after that, or on another 4xx, or on a
reply that breaks the protocol (wrong count, non-number), the stage fails with a StageError
naming the source and the URL. Nothing is ever scored as 0 in place of an answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from rlhf_api.served import RemoteReward, header_env

from ..errors import StageError
from .protocol import (
    RETRY_STATUSES,
    ProtocolError,
    backoff_seconds,
    batches,
    parse_scores,
    request_body,
    status_kind,
    too_long,
)
from .server_words import server_words

# A reply is read no further than this (a score per item is a few bytes; 4096 items fit easily).
MAX_REPLY_BYTES = 16 * 1024 * 1024


def completion_text(value: Any) -> str:
    """A prompt or completion as text (conversational ones: the last message's content)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        return str(value[-1].get("content", ""))
    return str(value)


def resolve_headers(remote: RemoteReward, source_index: int, where: str) -> dict[str, str]:
    """Header values from the env vars the operator fills from the Secrets (rlhf run: export them)."""
    headers = {}
    for j, header in enumerate(remote.headers):
        name = header_env(source_index, j)
        value = os.environ.get(name)
        if value is None:
            raise StageError(
                f"{where}.remote.headers[{j}]",
                f"env {name} is not set (on a cluster the operator sets it from Secret "
                f"{header.secret_key_ref.name}/{header.secret_key_ref.key}; with rlhf run, export it)",
                kind="config",
            )
        headers[header.name] = value
    return headers


@dataclass
class CallStats:
    requests: int = 0
    retries: int = 0
    items: int = 0
    seconds: float = 0.0
    last_errors: list[str] = field(default_factory=list)


class RemoteScorer:
    """`score(prompts=..., completions=..., **columns) -> [float | None]` through HTTP."""

    def __init__(
        self,
        remote: RemoteReward,
        where: str,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        label: str = "remote",
        columns: Sequence[str] | None = None,
    ) -> None:
        self.remote = remote
        self.where = where
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.sleep = sleep
        self.label = label
        # The dataset's columns to send (TRL also passes its own keyword arguments, e.g. trainer_state).
        self.columns = None if columns is None else [c for c in columns if c not in ("prompt", "completion")]
        self.stats = CallStats()

    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
        texts = [completion_text(p) for p in prompts]
        responses = [completion_text(c) for c in completions]
        columns = {
            name: list(values)
            for name, values in columns.items()
            if (self.columns is None or name in self.columns)
            and isinstance(values, list | tuple)
            and len(values) == len(responses)
        }
        started = time.monotonic()
        scores = asyncio.run(self._score_all(texts, responses, columns))
        self.stats.seconds += time.monotonic() - started
        self.stats.items += len(responses)
        return scores

    def _scores(self, status: int, raw: bytes, expected: int) -> list[float | None]:
        """A 2xx reply's scores; any 2xx with a valid body is a success (a 204 has none)."""
        if len(raw) > MAX_REPLY_BYTES:
            raise self._fail(f"refused the reply: larger than {MAX_REPLY_BYTES} bytes")
        if not raw.strip():
            raise self._fail(f'HTTP {status} with an empty body; the protocol expects {{"scores": [...]}}')
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise self._fail(f"the reply is not JSON ({exc})") from exc
        try:
            return parse_scores(data, expected)
        except ProtocolError as exc:
            raise self._fail(f"refused the reply: {exc}") from exc

    def metrics(self) -> dict[str, float]:
        """The stage metrics of this source: requests and retries (declared by the policy kinds)."""
        return {"remote_requests": float(self.stats.requests), "remote_retries": float(self.stats.retries)}

    def _fail(self, message: str) -> StageError:
        return StageError(self.where, f"remote reward {self.remote.url}: {message}")

    async def _score_all(
        self, prompts: list[str], responses: list[str], columns: Mapping[str, Any]
    ) -> list[float | None]:
        limit = asyncio.Semaphore(self.remote.max_concurrency)
        timeout = aiohttp.ClientTimeout(total=self.remote.timeout_seconds)
        connector = aiohttp.TCPConnector(limit=self.remote.max_concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector, headers=self.headers) as session:

            async def one(part: range) -> list[float | None]:
                body = request_body(
                    prompts[part.start : part.stop],
                    responses[part.start : part.stop],
                    {name: values[part.start : part.stop] for name, values in columns.items()},
                )
                async with limit:
                    return await self._post(session, body, len(part))

            parts = batches(len(responses), self.remote.batch_size)
            results = await asyncio.gather(*(one(p) for p in parts))
        return [score for result in results for score in result]

    async def _post(self, session: aiohttp.ClientSession, body: dict[str, Any], expected: int) -> list[float | None]:
        attempts = self.remote.retries + 1
        problem = ""
        for attempt in range(1, attempts + 1):
            retry_after: str | None = None
            self.stats.requests += 1
            try:
                async with session.post(self.remote.url, json=body) as reply:
                    raw = await reply.content.read(MAX_REPLY_BYTES + 1)
                    if 200 <= reply.status < 300:
                        return self._scores(reply.status, raw, expected)
                    words = server_words(raw, self.headers.values())
                    problem = f"HTTP {reply.status}" + (f" ({words})" if words else "")
                    if reply.status not in RETRY_STATUSES:
                        raise self._fail(f"{problem}; not retried ({status_kind(reply.status)})")
                    retry_after = reply.headers.get("Retry-After")
            except TimeoutError:
                problem = f"no reply within timeoutSeconds {self.remote.timeout_seconds:g}"
            except aiohttp.ClientError as exc:
                problem = f"cannot reach it ({type(exc).__name__}: {exc})"
            if attempt < attempts:
                wait = backoff_seconds(attempt, retry_after, budget=self.remote.timeout_seconds)
                if wait is None:
                    raise self._fail(f"{problem}; {too_long(retry_after, self.remote.timeout_seconds)}")
                self.stats.retries += 1
                print(
                    f"remote reward {self.label}: {problem}; retry {attempt} of {self.remote.retries} in {wait:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
                await self.sleep(wait)
        raise self._fail(f"{problem}, after {attempts} attempt(s) (retries: {self.remote.retries})")


def remote_reward(
    remote: RemoteReward, where: str, source_index: int, label: str, columns: Sequence[str]
) -> RemoteScorer:
    """`columns`: the dataset's columns (sent with each request; other keyword arguments are not)."""
    return RemoteScorer(remote, where, resolve_headers(remote, source_index, where), label=label, columns=columns)
