"""Real HTTP servers for the served-model tests, on 127.0.0.1 only.

- `ScriptedServer`: an aiohttp app in its own thread and event loop whose replies a test scripts
  (status, body, delay, headers per request), for the remote reward drills;
- `FakeOpenAI`: an OpenAI-compatible chat completions server that judges the arithmetic task
  (it reads "What is a + b?" and the two responses from the judge prompt), with optional
  logprobs, token usage, and scripted faults (429 storms, slow replies, 500s, 401);
- `serve_reward`: `rlhf serve-reward MODEL_DIR --port 0` as a subprocess, its URL read from its
  first line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.processes import subprocess_env


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-encoded unless `raw`
    raw: str | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class _Threaded:
    """Runs an aiohttp app on 127.0.0.1 (any free port) in a daemon thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(self.app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> _Threaded:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: Any) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class ScriptedServer(_Threaded):
    """POST /score answers with `script(index, body) -> Reply` (index counts requests from 0)."""

    def __init__(self, script: Callable[[int, dict[str, Any]], Reply]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        app = web.Application()
        app.router.add_post("/score", self._score)
        super().__init__(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/score"

    async def _score(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        index = len(self.requests)
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        reply = self.script(index, body)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        text = reply.raw if reply.raw is not None else json.dumps(reply.body)
        return web.Response(status=reply.status, text=text, headers=reply.headers, content_type="application/json")


def length_scores(_: int, body: dict[str, Any]) -> Reply:
    """A well-behaved scorer: the response's length."""
    return Reply(body={"scores": [float(len(r)) for r in body["responses"]]})


_QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?")


def arithmetic_preference(prompt: str) -> str | None:
    """The label of the right response in a default-template judge prompt, or None."""
    asked = _QUESTION.findall(prompt)
    a = re.search(r"Response A: (.*)", prompt)
    b = re.search(r"Response B: (.*)", prompt)
    if not asked or a is None or b is None:
        return None
    right = str(int(asked[-1][0]) + int(asked[-1][1]))
    a_right, b_right = a.group(1).strip() == right, b.group(1).strip() == right
    if a_right == b_right:
        return None
    return "A" if a_right else "B"


class FakeOpenAI(_Threaded):
    """POST /v1/chat/completions: answers "A" or "B" for the right arithmetic response.

    logprobs: return top_logprobs (P(right) = `confidence`) when the client asks for them.
    faults: per request index, "429" (a storm: each listed index), "slow" (sleeps `slow_s`),
    "500", "401", "401echo" (echoes the Authorization header), "400pinned" (transformers serve's
    answer to another model name). `api_key`: the Bearer token it requires (None: any).
    """

    def __init__(
        self,
        logprobs: bool = True,
        faults: dict[int, str] | None = None,
        slow_s: float = 3.0,
        confidence: float = 0.9,
        api_key: str | None = None,
        answer: Callable[[str], str] | None = None,
    ) -> None:
        self.logprobs = logprobs
        self.faults = faults or {}
        self.slow_s = slow_s
        self.confidence = confidence
        self.api_key = api_key
        self.answer = answer
        self.count = 0
        self.lock = threading.Lock()
        self.bodies: list[dict[str, Any]] = []
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        super().__init__(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _complete(self, request: web.Request) -> web.Response:
        with self.lock:
            index = self.count
            self.count += 1
        body = await request.json()
        self.bodies.append(body)
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "bad key", "type": "auth"}}, status=401)
        fault = self.faults.get(index)
        if fault == "429":
            error = {"error": {"message": "rate limited", "type": "rate_limit"}}
            return web.json_response(error, status=429, headers={"Retry-After": "0"})
        if fault in ("500", "401"):
            return web.json_response({"error": {"message": fault, "type": "x"}}, status=int(fault))
        if fault == "401echo":  # a gateway that echoes the Authorization header
            message = f"bad token {request.headers.get('Authorization')}"
            return web.json_response({"error": {"message": message, "type": "auth"}}, status=401)
        if fault == "400pinned":  # transformers serve's words (FastAPI's detail)
            detail = f"Server is pinned to '/models/judge'; requested '{body['model']}'."
            return web.json_response({"detail": detail}, status=400)
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
        prompt = body["messages"][-1]["content"]
        label = self.answer(prompt) if self.answer else (arithmetic_preference(prompt) or "A")
        other = "B" if label == "A" else "A"
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": label},
            "finish_reason": "length",
            "logprobs": None,
        }
        if self.logprobs and body.get("logprobs"):
            top = [
                {"token": label, "logprob": math.log(self.confidence), "bytes": None},
                {"token": " " + other, "logprob": math.log(1 - self.confidence), "bytes": None},
            ]
            choice["logprobs"] = {"content": [{**top[0], "top_logprobs": top}]}
        tokens = len(prompt.split())
        return web.json_response(
            {
                "id": f"cmpl-{index}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [choice],
                "usage": {"prompt_tokens": tokens, "completion_tokens": 1, "total_tokens": tokens + 1},
            }
        )


@contextlib.contextmanager
def serve_reward(model_dir: str, *options: str, timeout: float = 120.0) -> Iterator[str]:
    """`rlhf serve-reward MODEL_DIR --port 0` on 127.0.0.1; yields its /score URL."""
    command = [sys.executable, "-c", "import sys; from rlhf_cli.main import main; sys.exit(main())"]
    proc = subprocess.Popen(
        [*command, "serve-reward", model_dir, "--host", "127.0.0.1", "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert proc.stdout is not None
        started = time.monotonic()
        line = proc.stdout.readline()
        while line and "serving" not in line and time.monotonic() - started < timeout:
            line = proc.stdout.readline()
        match = re.search(r"(http://\S+/score)", line)
        if match is None:
            proc.kill()
            raise AssertionError(f"rlhf serve-reward did not start: {line!r} {proc.communicate()[1][-2000:]}")
        yield match.group(1)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after 10 s: a server stuck in a forward pass still goes."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def transformers_serve(model_dir: str, timeout: float = 90.0) -> Iterator[str]:
    """Hugging Face's `transformers serve MODEL_DIR` (the transformers[serving] extra) on
    127.0.0.1, on CPU, pinned to the model; yields its OpenAI base URL (…/v1). The command is the
    one docs/served-models.md shows."""
    import urllib.request

    port = _free_port()
    command = [sys.executable, "-c", "from transformers.cli.transformers import main; main()"]
    args = ["serve", model_dir, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115  # closed below; a file, not a pipe: a chatty server never blocks on it
    proc = subprocess.Popen(
        [*command, *args], stdout=log, stderr=log, text=True, env=subprocess_env(HF_HUB_DISABLE_TELEMETRY="1")
    )
    try:
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"transformers serve exited: {log.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - started > timeout:
                raise AssertionError(f"transformers serve did not answer /health within {timeout:.0f} s")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _stop(proc)
        log.close()
