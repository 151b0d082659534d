"""`rlhf serve-reward MODEL_DIR` (`rlhf-train serve-reward`): a reward model behind HTTP.

Serves a reward stage's output (MODEL_DIR, or its merged/ directory) with the protocol in
rlhf_api.served, so PPO/GRPO/RLOO/ReST stages can score through a `remote` reward source:

    POST /score   {"prompts": [...], "responses": [...], "columns": {...}} -> {"scores": [...]}
    GET  /health  {"status": "ok", "model": ..., "protocol": 1, "in_flight": ..., "queued_items": ...,
                   "limits": {...}}   (readiness/liveness probe)

It scores exactly as the in-process reward sources do (prompt + response + eos, in the reward
model's tokenizer, the score head on the last non-padding token): the same RewardModelScorer.

Its work is bounded (Limits): each item is cut to the model's maximum length from the left (the
response and its eos are what the score reads), a request holds at most --max-items items and
--max-body-bytes bytes (413/400 naming the limit otherwise), and at most --max-queued-items
items wait (503 with Retry-After beyond). Requests are scored a forward pass at a time in one
worker thread (torch uses the cores), interleaved across requests; a request whose client
disconnected stops at its next pass. The event loop keeps answering /health meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_api.layout import MERGED
from rlhf_api.served import PROTOCOL_VERSION

from .protocol import ProtocolError, parse_request

PROG = "rlhf serve-reward"
DEFAULT_MAX_ITEMS = 1024
# Bytes of JSON per token the body limit allows (a token is a few characters; escapes, columns).
BODY_BYTES_PER_TOKEN = 16
MIN_BODY_BYTES = 1024 * 1024
QUEUE_REQUESTS = 4  # --max-queued-items defaults to this many full requests


@dataclass(frozen=True)
class Limits:
    """What one server accepts: tokens per item (cut from the left), items per request, bytes
    per body, and items queued across requests (beyond it: 503 with Retry-After)."""

    max_length: int
    max_items: int
    max_body_bytes: int
    max_queued_items: int

    @classmethod
    def for_model(
        cls,
        model_max: int,
        max_length: int | None = None,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_body_bytes: int | None = None,
        max_queued_items: int | None = None,
    ) -> Limits:
        length = min(model_max, max_length or model_max)
        body = max_body_bytes or max(MIN_BODY_BYTES, max_items * length * BODY_BYTES_PER_TOKEN)
        return cls(length, max_items, body, max_queued_items or QUEUE_REQUESTS * max_items)

    def as_dict(self) -> dict[str, int]:
        return {
            "max_length": self.max_length,
            "max_items": self.max_items,
            "max_body_bytes": self.max_body_bytes,
            "max_queued_items": self.max_queued_items,
        }


def model_path(model_dir: str) -> str:
    """MODEL_DIR itself when it holds a model, else its merged/ directory (a stage output dir)."""
    path = Path(model_dir).expanduser()
    if (path / "config.json").is_file():
        return str(path)
    if (path / MERGED / "config.json").is_file():
        return str(path / MERGED)
    raise SystemExit(f"{PROG}: error: MODEL_DIR: no model in '{model_dir}' (nor in its {MERGED}/)")


def model_max_length(model: Any, tokenizer: Any) -> int:
    """The most tokens the model takes: its positions, or the tokenizer's maximum when smaller."""
    candidates = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    found = [int(c) for c in candidates if isinstance(c, int) and 0 < c < 10**7]
    return min(found) if found else 2048


def load_scorer(path: str, batch_size: int, max_length: int | None, device: str) -> tuple[Any, int]:
    """(the same scorer the in-process reward sources use, on `path`'s sequence classifier,
    truncating from the left to `max_length`; the model's maximum length)."""
    import torch
    from rlhf_api.model_config import ModelConfig
    from rlhf_api.stage_config import QuantizationConfig

    from ..modeling import load_sequence_classifier
    from ..ppo.reward_scoring import RewardModelScorer, classifier_score

    model, tokenizer = load_sequence_classifier(ModelConfig(name=path), QuantizationConfig(), os.path.dirname(path))
    if model.config.num_labels != 1:
        raise SystemExit(f"{PROG}: error: '{path}' is not a one-output sequence classifier (a reward model)")
    model.to(torch.device(device))  # type: ignore[arg-type]  # transformers' stub of .to is too narrow
    model_max = model_max_length(model, tokenizer)
    # Cut from the left: the response and its eos (what the score head reads) are kept.
    tokenizer.truncation_side = "left"
    length = min(model_max, max_length or model_max)
    scorer = RewardModelScorer(
        classifier_score(model), tokenizer, batch_size=batch_size, max_length=length, device=torch.device(device)
    )
    return scorer, model_max


def build_app(scorer: Any, model_name: str, limits: Limits, chunk: int = 32) -> Any:
    """The aiohttp application around `scorer(prompts, responses, []) -> tensor`.

    Requests are scored `chunk` items at a time in one worker thread, so chunks of concurrent
    requests interleave (a small request waits for one chunk, not a whole large request) and a
    request whose client went away stops at its next chunk."""
    from aiohttp import web

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score")
    counters = {"requests": 0, "items": 0, "abandoned": 0, "refused": 0, "in_flight": 0, "queued_items": 0}

    def run_scorer(prompts: list[str], responses: list[str]) -> list[float]:
        return [float(x) for x in scorer(prompts, responses, []).tolist()]

    def refuse(status: int, message: str, **headers: str) -> web.Response:
        counters["refused"] += 1
        return web.json_response({"error": message, "limits": limits.as_dict()}, status=status, headers=headers)

    def gone(request: web.Request) -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    async def score(request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > limits.max_body_bytes:
            return refuse(
                413,
                f"the body is {request.content_length} bytes, more than max_body_bytes {limits.max_body_bytes} "
                "(--max-body-bytes); send fewer items per request",
            )
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return refuse(413, f"the body is larger than max_body_bytes {limits.max_body_bytes} (--max-body-bytes)")
        try:
            body = json.loads(raw)
        except ValueError:
            return refuse(400, "the request body is not JSON")
        try:
            prompts, responses, _columns = parse_request(body)
        except ProtocolError as exc:
            return refuse(400, str(exc))
        if len(prompts) > limits.max_items:
            return refuse(400, f"{len(prompts)} items, more than max_items {limits.max_items} (--max-items)")
        if counters["queued_items"] + len(prompts) > limits.max_queued_items:
            return refuse(
                503,
                f"busy: {counters['queued_items']} items queued, max_queued_items {limits.max_queued_items}",
                **{"Retry-After": "1"},
            )
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        scores: list[float] = []
        counters["in_flight"] += 1
        counters["queued_items"] += len(prompts)
        try:
            for part in range(0, len(prompts), chunk):
                if gone(request):  # the client gave up: the rest of its work is abandoned
                    counters["abandoned"] += 1
                    return web.Response(status=499)
                end = min(len(prompts), part + chunk)
                scores += await loop.run_in_executor(executor, run_scorer, prompts[part:end], responses[part:end])
                counters["queued_items"] -= end - part
        finally:
            counters["in_flight"] -= 1
            counters["queued_items"] -= len(prompts) - len(scores)
        counters["requests"] += 1
        counters["items"] += len(prompts)
        return web.json_response(
            {"scores": scores, "model": model_name, "seconds": round(time.monotonic() - started, 4)},
            dumps=lambda v: json.dumps(v, allow_nan=False),
        )

    async def health(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "model": model_name,
                "protocol": PROTOCOL_VERSION,
                **counters,
                "limits": limits.as_dict(),
            }
        )

    async def close(_: web.Application) -> None:
        executor.shutdown(wait=False, cancel_futures=True)

    app = web.Application(client_max_size=limits.max_body_bytes)
    app.router.add_post("/score", score)
    app.router.add_get("/health", health)
    app.on_cleanup.append(close)
    return app


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Serve a reward model with the remote reward protocol.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a reward stage's output (or its merged/ model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start)")
    p.add_argument("--batch-size", type=int, default=32, help="items per forward pass")
    p.add_argument(
        "--max-length",
        type=int,
        help="tokens scored per item, cut from the left so the response's end is kept (default and most: the model's)",
    )
    p.add_argument("--max-items", type=int, default=DEFAULT_MAX_ITEMS, help="items per request (more: 400)")
    p.add_argument(
        "--max-body-bytes",
        type=int,
        help=f"request body limit (more: 413; default max-items x max-length x {BODY_BYTES_PER_TOKEN}, at least 1 MiB)",
    )
    p.add_argument(
        "--max-queued-items",
        type=int,
        help=f"items waiting across requests (more: 503 with Retry-After; default {QUEUE_REQUESTS} x max-items)",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0 (default: cpu)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    return p


async def _serve(app: Any, host: str, port: int, path: str) -> None:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server: Any = site._server  # an asyncio Server: the port actually bound (--port 0)
    bound = server.sockets[0].getsockname()[1] if server is not None else port
    print(f"{PROG}: serving {path} on http://{host}:{bound}/score", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    path = model_path(args.model_dir)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    scorer, model_max = load_scorer(path, args.batch_size, args.max_length, args.device)
    limits = Limits.for_model(model_max, args.max_length, args.max_items, args.max_body_bytes, args.max_queued_items)
    app = build_app(scorer, path, limits, chunk=args.batch_size)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(app, args.host, args.port, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
