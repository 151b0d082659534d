"""The RLAIF endpoint judge against a real OpenAI-compatible server nobody here wrote: Hugging
Face's `transformers serve` (the transformers[serving] extra, the project's transformers
version) on 127.0.0.1, serving a tiny judge built offline (tests/served/tiny_judge.py).

It ignores logprobs/top_logprobs, so the judge reads the answer text (the parsed path): with
labels the model answers (A/B) the stage writes pairs and DPO trains on them; with labels it
never answers the verdict gate fails the stage (issue 24, item 1). The server's own words
reach the failure (a model name it is not pinned to; no chat template). The hand-written
FakeOpenAI (servers.py) remains only for faults a real server cannot be made to produce.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rlhf_api.rlaif_config import RlaifLabelConfig
from rlhf_api.served import JudgeEndpoint
from rlhf_api.stage_config import DatasetConfig
from rlhf_trainer.errors import StageError
from rlhf_trainer.serving.judge_client import EndpointJudge

from tests.trainer.stage_helpers import run_stage_cli, write_config

from .servers import transformers_serve
from .tiny_judge import CONSTITUTION, JUDGE_TEMPLATE, build_tiny_judge, refusal

pytestmark = pytest.mark.timeout(600)

SERVING = all(importlib.util.find_spec(m) is not None for m in ("fastapi", "uvicorn", "starlette"))
if not SERVING:
    pytest.skip(
        "the transformers[serving] extra is not installed (fastapi, uvicorn): pip install -e '.[test]'",
        allow_module_level=True,
    )

LABELS = {"judgeTemplate": JUDGE_TEMPLATE, "constitution": CONSTITUTION}


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_judge(tmp_path_factory.mktemp("judge"))


@pytest.fixture(scope="module")
def server(judge_dir: Path) -> Iterator[str]:
    with transformers_serve(str(judge_dir)) as url:
        yield url


def endpoint(url: str, model: str, **options: Any) -> JudgeEndpoint:
    return JudgeEndpoint.model_validate({"url": url, "model": model, "retries": 1, "timeoutSeconds": 30, **options})


def test_logprobs_are_ignored_so_the_answer_is_parsed(server: str, judge_dir: Path) -> None:
    config = RlaifLabelConfig.model_validate(LABELS)
    judge = EndpointJudge(endpoint(server, str(judge_dir)), config, sleep=lambda s: None)
    prompt = "Question: What is 12 + 3?\n\nAnswer: "
    judged = judge.judge([(prompt, "15", refusal(0)), (prompt, refusal(1), "15")])
    assert judge.methods == ["parsed", "parsed"]  # logprobs asked for (the default), none returned
    metrics = judge.metrics()
    assert metrics["judge_logprobs_share"] == 0.0 and metrics["judge_parsed_share"] == 1.0
    assert [j.chosen for j in judged] == ["15", "15"] and all(j.confidence == 1.0 for j in judged)


def test_the_servers_words_reach_the_failure(server: str, judge_dir: Path) -> None:
    judge = EndpointJudge(endpoint(server, "sft-judge"), RlaifLabelConfig(), sleep=lambda s: None)
    with pytest.raises(StageError) as caught:
        judge.judge([("p", "a", "b")])
    assert f"HTTP 400 (Server is pinned to '{judge_dir}'; requested 'sft-judge'.)" in caught.value.message


def test_a_model_without_a_chat_template_fails_with_the_advice(tmp_path: Path) -> None:
    from rlhf_trainer.builtin_task.arithmetic import materialize_tiny_llama

    plain = materialize_tiny_llama(str(tmp_path))  # its tokenizer has no chat template
    with transformers_serve(plain) as url, pytest.raises(StageError) as caught:
        judge = EndpointJudge(endpoint(url, plain, retries=0), RlaifLabelConfig(), sleep=lambda s: None)
        judge.judge([("p", "a", "b")])
    assert "HTTP 500 (Internal Server Error)" in caught.value.message
    assert "no chat template" in caught.value.message and "docs/served-models.md" in caught.value.message


def _candidates(out: Path, work_dir: str, dataset: dict[str, Any]) -> None:
    """The policy's candidates, as the stage writes them (it reuses them): an answer and a refusal."""
    from rlhf_trainer.builtin_task import arithmetic as builtin
    from rlhf_trainer.data import prompt_rows

    rows = prompt_rows(DatasetConfig.model_validate(dataset), work_dir, 42)
    out.mkdir()
    with (out / "candidates.jsonl").open("w") as f:
        for index, prompt in enumerate(rows.prompts):
            right = builtin.correct_answer(prompt.split("Question: ")[1].split("\n")[0])
            responses = [right, refusal(index)] if index % 2 else [refusal(index), right]
            f.write(json.dumps({"prompt": prompt, "responses": responses}) + "\n")


def _rlaif(tmp_path: Path, name: str, server: str, judge_dir: Path, **section: Any) -> tuple[int, Any, Path]:
    from rlhf_trainer.builtin_task.arithmetic import materialize_tiny_llama

    work_dir = str(tmp_path / "run")
    materialize_tiny_llama(work_dir)
    dataset = {"source": "builtin:arithmetic", "maxSamples": 8}
    out = tmp_path / name
    _candidates(out, work_dir, dataset)
    judge = {"endpoint": {"url": server, "model": str(judge_dir), "timeoutSeconds": 30, "maxConcurrency": 2}}
    config = write_config(tmp_path / f"{name}.yaml", "rlaif", work_dir, out, dataset=dataset, judge=judge, **section)
    document = yaml.safe_load(config.read_text())
    document["rlaif"].pop("training")
    config.write_text(yaml.safe_dump(document))
    code, result = run_stage_cli("rlaif", config)
    return code, result, out


def test_labels_the_model_never_answers_fail_the_verdict_gate(server: str, judge_dir: Path, tmp_path: Path) -> None:
    """Issue 24, item 1: every verdict unparsed used to succeed, writing coin flips for DPO."""
    code, result, out = _rlaif(tmp_path, "rlaif", server, judge_dir, labels=["first", "second"], **LABELS)
    assert code == 1 and result is not None and result.status == "failed"
    assert result.message.startswith("rlaif.minDecidedShare: only 0% of the judge's verdicts were decided (0 of 16")
    assert "name neither label 'first' nor 'second'" in result.message
    assert "returned no log-probabilities (transformers serve ignores them)" in result.message
    assert not (out / "preferences.jsonl").exists()


def test_rlaif_against_transformers_serve_writes_pairs_and_dpo_trains(
    server: str, judge_dir: Path, tmp_path: Path
) -> None:
    code, result, out = _rlaif(tmp_path, "rlaif", server, judge_dir, confidenceThreshold=0.75, **LABELS)
    assert code == 0 and result is not None and result.status == "succeeded", result
    m = result.metrics
    assert m["decided_share"] == 1.0 and m["pairs_written"] == m["pairs_judged"] == 8
    assert m["order_agreement"] == 1.0 and m["label_agreement"] == 1.0
    assert m["judge_parsed_share"] == 1.0 and m["judge_logprobs_share"] == 0.0
    judgements = [json.loads(line) for line in (out / "judgements.jsonl").read_text().splitlines()]
    assert {j["judge_method"] for j in judgements} == {"parsed"}

    dpo_out = tmp_path / "dpo"
    dpo = write_config(
        tmp_path / "dpo.yaml", "dpo", str(tmp_path / "run"), dpo_out, dataset={"source": str(out / "preferences.jsonl")}
    )
    code, result = run_stage_cli("dpo", dpo)
    assert code == 0 and result is not None and result.status == "succeeded", result
    assert (dpo_out / "merged" / "config.json").is_file()
