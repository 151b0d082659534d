"""`rlhf serve-reward` on a tiny reward model, on 127.0.0.1: its scores equal the in-process
reward source's, it refuses malformed requests, and a GRPO stage trains against it."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from rlhf_api.model_config import ModelConfig
from rlhf_api.reward_sources import RewardSource
from rlhf_trainer.reward_sources import build_reward_functions

from tests.trainer.stage_helpers import run_stage_cli, write_config

from .servers import serve_reward

pytestmark = pytest.mark.timeout(300)

PROMPTS = [f"What is {a} + {b}?\n" for a, b in [(1, 2), (13, 29), (7, 8), (40, 2), (99, 1), (5, 5), (12, 34)]]
RESPONSES = ["3", "42", "15 is the answer", "", "100\nand some more words after it", "10", "4 6"]


@pytest.fixture(scope="module")
def stage_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reward stage's output directory: merged/ holds a one-output classifier on the tiny Llama
    (its score head scaled up so that the scores are not all near 0)."""
    import torch
    from rlhf_trainer.builtin_task.arithmetic import materialize_tiny_llama
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root = tmp_path_factory.mktemp("rm")
    base = materialize_tiny_llama(str(root))
    torch.manual_seed(3)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    with torch.no_grad():
        model.score.weight.mul_(50)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(root / "reward" / "merged")
    tokenizer.save_pretrained(root / "reward" / "merged")
    return root / "reward"


def post(url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_served_scores_equal_in_process_scores(stage_output: Path) -> None:
    in_process = build_reward_functions(
        [RewardSource(type="rewardModel")],
        reward_model=ModelConfig(name=str(stage_output / "merged")),
        work_dir=str(stage_output.parent),
        columns=[],
    ).functions[0](prompts=PROMPTS, completions=RESPONSES)
    assert max(abs(s) for s in in_process if s is not None) > 0.1  # not a flat head

    # The server batches differently (3 per forward pass) from the client (2 per request).
    with serve_reward(str(stage_output), "--batch-size", "3") as url:
        remote = RewardSource.model_validate({"type": "remote", "remote": {"url": url, "batchSize": 2}})
        served = build_reward_functions([remote], reward_model=None, work_dir="/nonexistent", columns=["answer"])
        scores = served.functions[0](prompts=PROMPTS, completions=RESPONSES, answer=["x"] * len(PROMPTS))
        health = json.loads(urllib.request.urlopen(url.replace("/score", "/health"), timeout=30).read())
        bad = post(url, {"prompts": ["a", "b"], "responses": ["c"]})
        empty = post(url, {"prompts": [], "responses": []})
    assert scores == pytest.approx(in_process, abs=1e-5)
    assert health["status"] == "ok" and health["protocol"] == 1 and health["items"] == len(PROMPTS)
    assert bad[0] == 400 and bad[1]["error"] == "2 prompts but 1 responses" and bad[1]["limits"]["max_length"] == 256
    assert empty[0] == 200 and empty[1]["scores"] == []


def test_grpo_trains_against_the_served_reward_model(stage_output: Path, tmp_path: Path) -> None:
    from rlhf_trainer.builtin_task.arithmetic import materialize_tiny_llama

    work_dir = str(stage_output.parent)
    materialize_tiny_llama(work_dir)
    out = tmp_path / "grpo"
    with serve_reward(str(stage_output)) as url:
        config = write_config(
            tmp_path / "grpo.yaml",
            "grpo",
            work_dir,
            out,
            training={"maxLength": None, "batchSize": 4, "numGenerations": 2, "maxCompletionLength": 3},
            rewards=[{"type": "remote", "name": "served_rm", "remote": {"url": url, "batchSize": 2}}],
        )
        code, result = run_stage_cli("grpo", config)
    assert code == 0 and result is not None and result.status == "succeeded", result
    assert {"rewards/served_rm/mean", "rewards/served_rm/std"} <= set(result.metrics)
    assert result.metrics["rewards/served_rm/std"] > 0  # real scores, not a constant
    assert result.metrics["remote_requests"] > 0 and result.metrics["remote_retries"] == 0  # issue 24, item 8

    # The same stage with the server gone: a clear failure naming the source, not zeros.
    document = yaml.safe_load(config.read_text())
    document["outputDir"] = str(tmp_path / "grpo-down")
    document["grpo"]["rewards"][0]["remote"]["retries"] = 1
    config.write_text(yaml.safe_dump(document))
    code, result = run_stage_cli("grpo", config)
    assert code == 1 and result is not None and result.status == "failed"
    assert result.message is not None and result.message.startswith(f"rewards[0]: remote reward {url}: cannot reach")


def test_ppo_scores_through_the_served_reward_model(stage_output: Path, tmp_path: Path) -> None:
    """ppo.rewards with a remote source: no rewardModel in the config, the engine's rewards come
    from the server (the in-process reward model's scores, to 1e-5)."""
    from rlhf_api.trainer_job import TrainerJobConfig
    from rlhf_trainer.builtin_task.arithmetic import materialize_tiny_llama
    from rlhf_trainer.stages import ppo

    from tests.trainer.stage_helpers import PPO_TINY

    work_dir = str(stage_output.parent)
    materialize_tiny_llama(work_dir)
    with serve_reward(str(stage_output)) as url:
        cfg = TrainerJobConfig.model_validate(
            {
                "stage": "ppo",
                "runName": "test",
                "model": {"name": "builtin:tiny-llama"},
                "outputDir": str(tmp_path / "ppo"),
                "workDir": work_dir,
                "ppo": {
                    "dataset": {"source": "builtin:arithmetic"},
                    "lora": {"r": 4},
                    "training": PPO_TINY,
                    "rewards": [{"type": "remote", "remote": {"url": url}}],
                },
            }
        )
        result = ppo.run(cfg)
    assert result.status == "succeeded", result.message
    assert result.metrics["reward_on_shared_base"] == 0.0 and result.metrics["reward_std"] > 0
    assert result.metrics["remote_requests"] > 0
    with pytest.raises(ValueError, match="rewardModel is required"):
        TrainerJobConfig.model_validate(
            {**cfg.to_file_dict(), "ppo": {**cfg.to_file_dict()["ppo"], "rewards": [{"type": "rewardModel"}]}}
        )


def test_limits_follow_the_model() -> None:
    from rlhf_trainer.serving.reward_server import Limits

    default = Limits.for_model(256)
    assert default.max_length == 256 and default.max_items == 1024
    assert default.max_body_bytes == 1024 * 256 * 16 and default.max_queued_items == 4 * 1024
    assert Limits.for_model(256, max_length=100_000).max_length == 256  # never past the model's positions
    assert Limits.for_model(4096, max_length=512, max_items=8).max_body_bytes == 1024 * 1024  # at least 1 MiB


def _raw_post(url: str, data: bytes, timeout: float = 60) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_the_server_bounds_its_work(stage_output: Path) -> None:
    """Issue 24, items 4-6: a 10 MB body drove the server to 24 GB; inputs were cut from the
    right (the response lost); abandoned requests kept running. Under 50 concurrent clients and
    a 10 MB body it stays up, answering within its limits."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    long_prompt = "Question: " + "What is 1 + 2? " * 60 + "\nAnswer: "  # far past --max-length 64
    options = ("--max-length", "64", "--max-items", "200", "--batch-size", "1")  # one item per forward pass
    with serve_reward(str(stage_output), *options) as url:
        health_url = url.replace("/score", "/health")
        # left truncation: responses that differ only at their end score differently
        code, reply = post(url, {"prompts": [long_prompt] * 3, "responses": ["5", "4", "totally different answer"]})
        assert code == 200 and len(set(reply["scores"])) == 3, reply

        huge = json.dumps({"prompts": ["p"], "responses": ["x" * 10_000_000]}).encode()
        code, reply = _raw_post(url, huge)
        assert code == 413 and "max_body_bytes" in reply["error"], reply
        code, reply = post(url, {"prompts": ["p"] * 201, "responses": ["r"] * 201})
        assert code == 400 and reply["error"] == "201 items, more than max_items 200 (--max-items)"

        def client(i: int) -> int:
            return post(url, {"prompts": [f"What is {i} + 1?\n"] * 20, "responses": [str(i + 1)] * 20})[0]

        with ThreadPoolExecutor(max_workers=50) as pool:
            codes = list(pool.map(client, range(50)))
        assert set(codes) <= {200, 503} and codes.count(200) >= 1, codes

        # a client that gives up: its work stops at the next forward pass
        host, port = url.split("//")[1].split("/")[0].split(":")
        body = json.dumps({"prompts": [long_prompt] * 200, "responses": ["5"] * 200}).encode()
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            head = f"POST /score HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            sock.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            time.sleep(0.2)  # 200 passes take seconds: it goes before they are done
        deadline = time.monotonic() + 60
        health = json.loads(urllib.request.urlopen(health_url, timeout=30).read())
        while health["abandoned"] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            health = json.loads(urllib.request.urlopen(health_url, timeout=30).read())
        assert post(url, {"prompts": ["p"], "responses": ["r"]})[0] == 200  # still up
    assert health["status"] == "ok" and health["abandoned"] == 1 and health["limits"]["max_length"] == 64
    assert health["queued_items"] == 0 and health["in_flight"] == 0
