"""The RLAIF judge behind an OpenAI-compatible server (a small aiohttp app on 127.0.0.1 speaking
the chat completions wire format, through the official `openai` client): both orders, logprobs
or parsed labels, 429 storms and timeouts retried, errors named; then the rlaif stage writes
pairs with it and a DPO stage trains on them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from rlhf_api.rlaif_config import RlaifLabelConfig
from rlhf_api.served import JudgeEndpoint
from rlhf_api.stage_config import DatasetConfig
from rlhf_trainer.errors import StageError
from rlhf_trainer.serving.judge_client import EndpointJudge, endpoint_judge, label_probability, parse_label

from tests.trainer.stage_helpers import run_stage_cli, write_config

from .servers import FakeOpenAI

pytestmark = pytest.mark.timeout(300)

Q = "Question: What is {} + {}?\nAnswer: "
PAIRS = [(Q.format(1, 2), "3", "4"), (Q.format(20, 5), "52", "25"), (Q.format(9, 9), "18", "17")]
RIGHT_IS_A = [True, False, True]


def judge_for(server: FakeOpenAI, **endpoint: Any) -> EndpointJudge:
    options = {"url": server.url, "model": "judge-7b", "retries": 3, "timeoutSeconds": 5, **endpoint}
    return EndpointJudge(JudgeEndpoint.model_validate(options), RlaifLabelConfig(), sleep=lambda s: None)


def test_logprobs_in_both_orders_with_token_counts() -> None:
    with FakeOpenAI(confidence=0.9) as server:
        judge = judge_for(server, maxConcurrency=3)
        judged = judge.judge(PAIRS)
    assert server.count == 2 * len(PAIRS)  # each pair asked in both orders
    shown = [b["messages"][0]["content"] for b in server.bodies]
    assert sum("Response A: 3\n" in s for s in shown) == 1 and sum("Response B: 3\n" in s for s in shown) == 1
    assert all(b["logprobs"] is True and b["top_logprobs"] == 5 and b["max_tokens"] == 1 for b in server.bodies)
    for judgement, right_is_a in zip(judged, RIGHT_IS_A, strict=True):
        assert judgement.prefers_a == right_is_a
        assert judgement.confidence == pytest.approx(0.9) and judgement.orders_agree
    assert judge.methods == ["logprobs"] * 3
    metrics = judge.metrics()
    assert metrics["judge_logprobs_share"] == 1.0 and metrics["judge_parsed_share"] == 0.0
    assert metrics["judge_requests"] == 6 and metrics["judge_retries"] == 0
    assert metrics["judge_prompt_tokens"] > 6 * 20 and metrics["judge_completion_tokens"] == 6


def test_without_logprobs_the_label_is_parsed_and_the_figures_say_so() -> None:
    with FakeOpenAI(logprobs=False) as server:
        judge = judge_for(server)
        judged = judge.judge(PAIRS)
    assert [j.prefers_a for j in judged] == RIGHT_IS_A and {j.confidence for j in judged} == {1.0}
    assert judge.methods == ["parsed"] * 3
    assert judge.metrics()["judge_parsed_share"] == 1.0 and judge.metrics()["judge_logprobs_share"] == 0.0
    with FakeOpenAI(answer=lambda prompt: "I cannot tell") as server:
        judge = judge_for(server, logprobs=False)
        judged = judge.judge(PAIRS[:1])
    # no verdict, not a coin flip at 0.5 (issue 24, item 1)
    assert judge.methods == ["unparsed"] and judged[0].a_first is None and judged[0].a_second is None
    assert not judged[0].decided and judged[0].confidence == 0.0
    assert judge.metrics()["judge_unparsed"] == 2.0


def test_a_mixed_verdict_is_undecided() -> None:
    """One order parsed, the other not: undecided (issue 24, item 2: it was confidence 0.75)."""
    with FakeOpenAI(answer=lambda prompt: "A" if "Response A: 3\n" in prompt else "no idea") as server:
        judge = judge_for(server, logprobs=False)
        judged = judge.judge(PAIRS[:1])
    assert judge.methods == ["mixed"] and judged[0].a_first == 1.0 and judged[0].a_second is None
    assert not judged[0].decided and judged[0].confidence == 0.0


def test_the_servers_words_reach_the_failure_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24, items 3 and 7: the server's explanation is kept, a credential it echoes is not."""
    monkeypatch.setenv("RLHF_JUDGE_API_KEY", "sk-live-SECRET123")
    endpoint = {"model": "judge-7b", "apiKey": {"name": "judge-key", "key": "token"}, "retries": 0}
    with FakeOpenAI(faults=dict.fromkeys(range(10), "401echo")) as server:
        config = JudgeEndpoint.model_validate({"url": server.url, **endpoint})
        with pytest.raises(StageError) as caught:
            endpoint_judge(config, RlaifLabelConfig()).judge(PAIRS[:1])
    message = caught.value.message
    assert "HTTP 401 (bad token Bearer [redacted]" in message and "SECRET123" not in message
    assert message.endswith("not retried (a client error)")
    with FakeOpenAI(faults=dict.fromkeys(range(10), "400pinned")) as server, pytest.raises(StageError) as caught:
        judge_for(server, retries=0).judge(PAIRS[:1])
    assert "HTTP 400 (Server is pinned to '/models/judge'; requested 'judge-7b'.)" in caught.value.message


def test_reading_labels() -> None:
    assert label_probability([("A", -0.1), (" B", -2.5)], ["A", "B"]) == pytest.approx(0.9 / (0.9 + 0.0821), rel=1e-2)
    assert label_probability([("The", -0.1), ("It", -2.0)], ["A", "B"]) is None
    assert label_probability([("B", -0.05), ("Hmm", -3.0)], ["A", "B"]) == pytest.approx(0.0497, rel=1e-2)
    assert parse_label("Response B is better than A", ["A", "B"]) == 0.0
    assert parse_label("A.", ["A", "B"]) == 1.0 and parse_label("BA", ["A", "B"]) is None


def test_429_storm_and_timeouts_are_retried() -> None:
    with FakeOpenAI(faults={0: "429", 1: "429", 2: "429", 3: "slow", 4: "500"}, slow_s=2.0) as server:
        judge = judge_for(server, maxConcurrency=1, timeoutSeconds=0.5, retries=5)
        judged = judge.judge(PAIRS)
    assert [j.prefers_a for j in judged] == RIGHT_IS_A
    assert judge.metrics()["judge_retries"] == 5 and judge.metrics()["judge_requests"] == 11


def test_a_storm_longer_than_the_retries_fails_naming_the_endpoint() -> None:
    with FakeOpenAI(faults=dict.fromkeys(range(100), "429")) as server, pytest.raises(StageError) as caught:
        judge_for(server, retries=2, maxConcurrency=1).judge(PAIRS[:1])
    assert caught.value.field == "rlaif.judge.endpoint"
    assert caught.value.message.startswith(f"judge {server.url} (model judge-7b): HTTP 429")
    assert caught.value.message.endswith("after 3 attempt(s) (retries: 2)")


def test_slow_judge_fails_after_the_retries() -> None:
    with (
        FakeOpenAI(faults=dict.fromkeys(range(100), "slow"), slow_s=1.5) as server,
        pytest.raises(StageError, match=r"no reply within timeoutSeconds 0.3, after 2 attempt\(s\)"),
    ):
        judge_for(server, retries=1, timeoutSeconds=0.3, maxConcurrency=1).judge(PAIRS[:1])


def test_api_key_from_env_and_a_wrong_key_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = {"model": "judge-7b", "apiKey": {"name": "judge-key", "key": "token"}, "retries": 3}
    with FakeOpenAI(api_key="sk-right") as server:
        config = JudgeEndpoint.model_validate({"url": server.url, **endpoint})
        with pytest.raises(StageError, match=r"env RLHF_JUDGE_API_KEY is not set .*judge-key/token"):
            endpoint_judge(config, RlaifLabelConfig())
        monkeypatch.setenv("RLHF_JUDGE_API_KEY", "sk-right")
        assert [j.prefers_a for j in endpoint_judge(config, RlaifLabelConfig()).judge(PAIRS)] == RIGHT_IS_A
        monkeypatch.setenv("RLHF_JUDGE_API_KEY", "sk-wrong")
        before = server.count
        with pytest.raises(StageError, match=r"HTTP 401 .*not retried"):
            endpoint_judge(config, RlaifLabelConfig()).judge(PAIRS[:1])
        assert server.count - before <= 2  # one request per order, none retried


def test_rlaif_with_the_endpoint_judge_writes_pairs_and_dpo_trains_on_them(tmp_path: Path) -> None:
    from rlhf_trainer.builtin_task import arithmetic as builtin
    from rlhf_trainer.builtin_task.arithmetic import materialize_tiny_llama
    from rlhf_trainer.data import prompt_rows

    work_dir = str(tmp_path / "run")
    materialize_tiny_llama(work_dir)
    dataset = {"source": "builtin:arithmetic", "maxSamples": 12}
    out = tmp_path / "rlaif"
    # The policy's candidates, written as the stage writes them (it reuses them): one right and
    # one wrong answer per prompt, so that agreement with ground truth is measurable.
    rows = prompt_rows(DatasetConfig.model_validate(dataset), work_dir, 42)
    out.mkdir()
    with (out / "candidates.jsonl").open("w") as f:
        for index, prompt in enumerate(rows.prompts):
            right = builtin.correct_answer(prompt.split("Question: ")[1].split("\n")[0])
            assert right is not None
            responses = [right, str(int(right) + 10)] if index % 2 else [str(int(right) - 1), right]
            f.write(json.dumps({"prompt": prompt, "responses": responses}) + "\n")

    with FakeOpenAI(faults={0: "429", 5: "slow"}, slow_s=2.0) as server:
        config = write_config(
            tmp_path / "rlaif.yaml",
            "rlaif",
            work_dir,
            out,
            dataset=dataset,
            judge={"endpoint": {"url": server.url, "model": "judge-7b", "timeoutSeconds": 1, "maxConcurrency": 2}},
            responsesPerPrompt=2,
            confidenceThreshold=0.6,
        )
        document = yaml.safe_load(config.read_text())
        document["rlaif"].pop("training")
        config.write_text(yaml.safe_dump(document))
        code, result = run_stage_cli("rlaif", config)
    assert code == 0 and result is not None and result.status == "succeeded", result
    m = result.metrics
    assert m["pairs_written"] == m["pairs_judged"] == 12 and m["label_agreement"] == 1.0
    assert m["judge_logprobs_share"] == 1.0 and m["judge_retries"] == 2 and m["judge_prompt_tokens"] > 0
    judgements = [json.loads(line) for line in (out / "judgements.jsonl").read_text().splitlines()]
    assert {j["judge_method"] for j in judgements} == {"logprobs"}
    assert all(j["chosen"] == (j["a"] if j["a_right"] else j["b"]) for j in judgements)

    dpo_out = tmp_path / "dpo"
    dpo = write_config(
        tmp_path / "dpo.yaml", "dpo", work_dir, dpo_out, dataset={"source": str(out / "preferences.jsonl")}
    )
    code, result = run_stage_cli("dpo", dpo)
    assert code == 0 and result is not None and result.status == "succeeded", result
    assert (dpo_out / "merged" / "config.json").is_file()
