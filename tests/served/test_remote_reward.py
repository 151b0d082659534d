"""Reward source type remote against real HTTP servers on 127.0.0.1: the protocol, batching,
headers from env, and the failure drills (down, slow, 429 storm, wrong count, non-number)."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from rlhf_api.reward_sources import RewardSource
from rlhf_trainer.errors import StageError
from rlhf_trainer.reward_sources import build_reward_functions
from rlhf_trainer.serving.protocol import ProtocolError, backoff_seconds, parse_request, parse_scores

from .servers import Reply, ScriptedServer, length_scores

PROMPTS = ["What is 1 + 2?\n", "What is 3 + 4?\n", "What is 5 + 6?\n"]
RESPONSES = ["3", "77", "11 and more"]


def build(url: str, **remote: Any) -> Any:
    source = RewardSource.model_validate(
        {"type": "remote", "remote": {"url": url, "retries": 2, "timeoutSeconds": 5, **remote}}
    )
    return build_reward_functions([source], reward_model=None, work_dir="/nonexistent", columns=["answer"])


def score(rewards: Any) -> list[float | None]:
    function = rewards.functions[0]
    return function(prompts=PROMPTS, completions=RESPONSES, answer=["3", "7", "11"])  # type: ignore[no-any-return]


def test_batches_columns_concurrency_and_order() -> None:
    with ScriptedServer(lambda i, body: Reply(body={"scores": [len(r) for r in body["responses"]]}, delay=0.2)) as s:
        rewards = build(s.url, batchSize=1, maxConcurrency=3)
        started = time.monotonic()
        assert score(rewards) == [1.0, 2.0, 11.0]
        elapsed = time.monotonic() - started
    assert rewards.labels == ["127.0.0.1"]
    assert len(s.requests) == 3 and elapsed < 0.55  # three batches of one, in parallel
    by_prompt = {r["prompts"][0]: r for r in s.requests}
    assert by_prompt[PROMPTS[1]] == {"prompts": [PROMPTS[1]], "responses": ["77"], "columns": {"answer": ["7"]}}


def test_null_is_no_verdict_and_the_weighted_total_skips_it() -> None:
    with ScriptedServer(lambda i, body: Reply(body={"scores": [1.5, None, -2]})) as s:
        totals, per_source = build(s.url).score(PROMPTS, RESPONSES, {"answer": ["3", "7", "11"]})
    assert per_source["127.0.0.1"] == [1.5, None, -2.0] and totals == [1.5, 0.0, -2.0]


def test_headers_come_from_env_never_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    header = {"name": "Authorization", "secretKeyRef": {"name": "reward-auth", "key": "token"}}
    with ScriptedServer(length_scores) as s:
        with pytest.raises(StageError) as caught:
            build(s.url, headers=[header])
        assert caught.value.field == "rewards[0].remote.headers[0]"
        assert "env RLHF_REWARD_0_HEADER_0 is not set" in caught.value.message
        assert "reward-auth/token" in caught.value.message
        monkeypatch.setenv("RLHF_REWARD_0_HEADER_0", "Bearer s3cret")
        score(build(s.url, headers=[header]))
    assert s.headers[0]["Authorization"] == "Bearer s3cret"
    with pytest.raises(ValueError, match="never a literal value"):
        RewardSource.model_validate(
            {"type": "remote", "remote": {"url": s.url, "headers": [{"name": "X", "secretKeyRef": "abc"}]}}
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_server_down_fails_naming_the_source_after_retries() -> None:
    url = f"http://127.0.0.1:{_free_port()}/score"
    rewards = build(url, retries=1)
    started = time.monotonic()
    with pytest.raises(StageError) as caught:
        score(rewards)
    assert caught.value.field == "rewards[0]"
    assert caught.value.message.startswith(f"remote reward {url}: cannot reach it")
    assert "after 2 attempt(s) (retries: 1)" in caught.value.message
    assert time.monotonic() - started < 3


def test_slow_server_times_out_then_a_retry_succeeds() -> None:
    with ScriptedServer(lambda i, body: Reply(body={"scores": [0.5] * 3}, delay=2.0 if i == 0 else 0.0)) as s:
        assert score(build(s.url, timeoutSeconds=0.5)) == [0.5] * 3
    assert len(s.requests) == 2


def test_always_slow_server_fails_with_the_timeout() -> None:
    with (
        ScriptedServer(lambda i, body: Reply(body={"scores": [0.5] * 3}, delay=1.5)) as s,
        pytest.raises(StageError, match=r"no reply within timeoutSeconds 0.3, after 2 attempt\(s\)"),
    ):
        score(build(s.url, timeoutSeconds=0.3, retries=1))


def test_429_storm_is_retried_until_it_passes() -> None:
    def storm(i: int, body: dict[str, Any]) -> Reply:
        if i < 3:
            return Reply(status=429, raw='{"error": "slow down"}', headers={"Retry-After": "0"})
        return length_scores(i, body)

    with ScriptedServer(storm) as s:
        assert score(build(s.url, retries=3)) == [1.0, 2.0, 11.0]
    assert len(s.requests) == 4


def test_429_storm_longer_than_the_retries_fails() -> None:
    with (
        ScriptedServer(lambda i, body: Reply(status=429, raw="{}", headers={"Retry-After": "0"})) as s,
        pytest.raises(StageError, match=r"HTTP 429 \(\{\}\), after 3 attempt\(s\) \(retries: 2\)"),
    ):
        score(build(s.url))
    assert len(s.requests) == 3


def test_client_errors_are_not_retried() -> None:
    with (
        ScriptedServer(lambda i, body: Reply(status=401, raw="unauthorized")) as s,
        pytest.raises(StageError, match=r"HTTP 401 \(unauthorized\); not retried"),
    ):
        score(build(s.url))
    assert len(s.requests) == 1


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(body={"scores": [1.0, 2.0]}), "the reply has 2 scores for 3 items"),
        (Reply(body={"scores": [1.0, "high", 2.0]}), "score 1 is 'high', not a finite number"),
        (Reply(body={"scores": [1.0, True, 2.0]}), "score 1 is True, not a finite number"),
        (Reply(raw='{"scores": [1.0, NaN, 2.0]}'), "score 1 is nan, not a finite number"),
        (Reply(body={"score": [1, 2, 3]}), 'the reply has no "scores" list'),
        (Reply(raw="<html>oops</html>"), "the reply is not JSON"),
    ],
)
def test_malformed_replies_are_refused_not_scored(reply: Reply, message: str) -> None:
    with ScriptedServer(lambda i, body: reply) as s, pytest.raises(StageError) as caught:
        score(build(s.url))
    assert message in caught.value.message and caught.value.field == "rewards[0]"
    assert len(s.requests) == 1  # a wrong answer is not retried


def test_protocol_checks_and_backoff() -> None:
    assert parse_scores({"scores": [1, None, 2.5]}, 3) == [1.0, None, 2.5]
    with pytest.raises(ProtocolError):
        parse_scores({"scores": [float("inf")]}, 1)
    assert parse_request({"prompts": ["p"], "responses": ["r"]}) == (["p"], ["r"], {})
    for bad in [[], {"prompts": ["p"], "responses": []}, {"prompts": ["p"], "responses": [1]}]:
        with pytest.raises(ProtocolError):
            parse_request(bad)
    with pytest.raises(ProtocolError, match="one value per item"):
        parse_request({"prompts": ["p"], "responses": ["r"], "columns": {"answer": []}})
    assert backoff_seconds(1, "2") == 2.0 and backoff_seconds(1, "Wed, 21 Oct 2015 07:28:00 GMT") <= 0.5
    # Retry-After is honoured in full up to the request's timeout (at least 30 s), never cut short
    # (issue 24, item 8: a server asking 120 s was hit after 30 s)
    assert backoff_seconds(1, "120", budget=300) == 120.0 and backoff_seconds(1, "120", budget=60) is None
    assert 0.25 <= backoff_seconds(1) <= 0.5 and 2.0 <= backoff_seconds(4) <= 4.0 and backoff_seconds(12) <= 30.0


def test_any_2xx_with_scores_is_a_success_and_an_empty_204_says_so() -> None:
    """Issue 24, item 8: a 201 with scores was "a client error", and so was a 204."""
    with ScriptedServer(lambda i, body: Reply(status=201, body={"scores": [1, 2, 3]})) as s:
        assert score(build(s.url)) == [1.0, 2.0, 3.0]
    with ScriptedServer(lambda i, body: Reply(status=204, raw="")) as s, pytest.raises(StageError) as caught:
        score(build(s.url))
    assert "HTTP 204 with an empty body" in caught.value.message and "client error" not in caught.value.message


def test_a_retry_after_longer_than_the_client_waits_fails_saying_so() -> None:
    with ScriptedServer(lambda i, body: Reply(status=429, raw="{}", headers={"Retry-After": "120"})) as s:
        started = time.monotonic()
        with pytest.raises(StageError, match=r"asks to retry after 120 s, more than this client waits \(60 s"):
            score(build(s.url, timeoutSeconds=60))
    assert len(s.requests) == 1 and time.monotonic() - started < 5  # not hit again early


def test_an_echoed_header_is_redacted_and_the_counts_are_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24, item 7: a gateway echoing the Authorization header put it into the message."""
    header = {"name": "Authorization", "secretKeyRef": {"name": "reward-auth", "key": "token"}}
    monkeypatch.setenv("RLHF_REWARD_0_HEADER_0", "Bearer SECRET123")

    def echo(i: int, body: dict[str, Any]) -> Reply:
        return Reply(status=401, raw="bad token Bearer SECRET123\nsecond line") if i else Reply(status=503)

    with ScriptedServer(echo) as s, pytest.raises(StageError) as caught:
        rewards = build(s.url, headers=[header], retries=2)
        try:
            score(rewards)
        finally:
            from rlhf_trainer.reward_sources import served_metrics

            counts = served_metrics(rewards.functions)
    assert "SECRET123" not in caught.value.message and "HTTP 401 (bad token [redacted])" in caught.value.message
    assert counts == {"remote_requests": 2.0, "remote_retries": 1.0}


def test_the_final_comparison_scores_through_the_remote_source(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24, item 8: a run whose rewards are remote got no win rate (only a reward model gave one)."""
    from rlhf_api.trainer_job import TrainerJobConfig
    from rlhf_trainer import model_comparison
    from rlhf_trainer.model_comparison import Side

    def answer(model_cfg: Any, quant: Any, work_dir: str, field: str, prompts: list[Any], *_: Any) -> Side:
        text = "a much longer answer" if field == "compare.candidate" else "short"
        return Side(model=model_cfg.name, answers=[text] * len(prompts), lengths=[1] * len(prompts))

    monkeypatch.setattr(model_comparison, "_answer", answer)
    with ScriptedServer(length_scores) as s:
        cfg = TrainerJobConfig.model_validate(
            {
                "stage": "grpo",
                "runName": "test",
                "model": {"name": "builtin:tiny-llama"},
                "outputDir": str(tmp_path / "grpo"),
                "workDir": str(tmp_path),
                "grpo": {
                    "dataset": {"source": "builtin:arithmetic"},
                    "rewards": [{"type": "remote", "name": "served", "remote": {"url": s.url}}],
                },
            }
        )
        summary = model_comparison.compare(cfg, cfg.compare_settings(), cfg.model.weights_at(str(tmp_path / "m")))
    assert summary.win_rate == 1.0 and summary.reward_model == "rewards: served" and summary.wins == summary.prompts
    assert s.requests and all(r["responses"][0] in ("short", "a much longer answer") for r in s.requests)
