"""`rlhf serve-reward MODEL_DIR` (`rlhf-train serve-reward`): a reward model behind HTTP.

Serves a reward stage's output (MODEL_DIR, or its merged/ directory) with the protocol in
rlhf_api.served, so PPO/GRPO/RLOO/ReST stages can score through a `remote` reward source:

    POST /score   {"prompts": [...], "responses": [...], "columns": {...}} -> {"scores": [...]}
    GET  /health  {"status": "ok", "model": ..., "protocol": 1}   (readiness/liveness probe)

It scores exactly as the in-process reward sources do (prompt + response + eos, in the reward
model's tokenizer, the score head on the last non-padding token): the same RewardModelScorer.
Requests are scored one at a time in a worker thread (torch uses the cores); the event loop
keeps answering /health meanwhile.
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
from pathlib import Path
from typing import Any

from rlhf_api.layout import MERGED
from rlhf_api.served import PROTOCOL_VERSION

from .protocol import ProtocolError, parse_request

PROG = "rlhf serve-reward"
MAX_REQUEST_BYTES = 64 * 1024 * 1024


def model_path(model_dir: str) -> str:
    """MODEL_DIR itself when it holds a model, else its merged/ directory (a stage output dir)."""
    path = Path(model_dir).expanduser()
    if (path / "config.json").is_file():
        return str(path)
    if (path / MERGED / "config.json").is_file():
        return str(path / MERGED)
    raise SystemExit(f"{PROG}: error: MODEL_DIR: no model in '{model_dir}' (nor in its {MERGED}/)")


def load_scorer(path: str, batch_size: int, max_length: int | None, device: str) -> Any:
    """The same scorer the in-process reward sources use, on `path`'s sequence classifier."""
    import torch
    from rlhf_api.model_config import ModelConfig
    from rlhf_api.stage_config import QuantizationConfig

    from ..modeling import load_sequence_classifier
    from ..ppo.reward_scoring import RewardModelScorer, classifier_score

    model, tokenizer = load_sequence_classifier(ModelConfig(name=path), QuantizationConfig(), os.path.dirname(path))
    if model.config.num_labels != 1:
        raise SystemExit(f"{PROG}: error: '{path}' is not a one-output sequence classifier (a reward model)")
    model.to(torch.device(device))  # type: ignore[arg-type]  # transformers' stub of .to is too narrow
    return RewardModelScorer(
        classifier_score(model), tokenizer, batch_size=batch_size, max_length=max_length, device=torch.device(device)
    )


def build_app(scorer: Any, model_name: str) -> Any:
    """The aiohttp application around `scorer(prompts, responses, []) -> tensor`."""
    from aiohttp import web

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score")
    counters = {"requests": 0, "items": 0}

    def run_scorer(prompts: list[str], responses: list[str]) -> list[float]:
        return [float(x) for x in scorer(prompts, responses, []).tolist()]

    async def score(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the request body is not JSON"}, status=400)
        try:
            prompts, responses, _columns = parse_request(body)
        except ProtocolError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        scores = await loop.run_in_executor(executor, run_scorer, prompts, responses) if prompts else []
        counters["requests"] += 1
        counters["items"] += len(prompts)
        return web.json_response(
            {"scores": scores, "model": model_name, "seconds": round(time.monotonic() - started, 4)},
            dumps=lambda v: json.dumps(v, allow_nan=False),
        )

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model": model_name, "protocol": PROTOCOL_VERSION, **counters})

    async def close(_: web.Application) -> None:
        executor.shutdown(wait=False, cancel_futures=True)

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
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
    p.add_argument("--max-length", type=int, help="truncate scored texts to this many tokens (default: none)")
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
    scorer = load_scorer(path, args.batch_size, args.max_length, args.device)
    app = build_app(scorer, path)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(app, args.host, args.port, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
