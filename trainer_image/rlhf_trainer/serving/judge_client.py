"""The RLAIF judge behind an OpenAI-compatible chat completions API (`rlaif.judge.endpoint`).

As the local judge, it sees each pair in both orders (labels mode: it answers with label A or
B, which name the first and second response shown). Each order is one chat completion with
temperature 0:
- logprobs (when asked for and returned): P(first) = p(A) / (p(A) + p(B)) from the top
  log-probabilities of the first answer token (tokens equal to a label after stripping spaces
  are summed; a label missing from the top list counts as the least likely listed token);
- otherwise the label is parsed from the answer text: the first of the two labels standing as a
  word gives P(first) 1 or 0; an answer naming neither is no verdict (None).
The figures say which was used: `judge_logprobs_share`, `judge_parsed_share`, `judge_unparsed`,
and each judged pair's `judge_method` in judgements.jsonl. A pair with an order undecided (also
"mixed": one order parsed, the other not) is undecided: never written, and counted by the
stage's verdict gate (rlaif.minDecidedShare). In parse mode a decided pair's confidence is 1
(both orders agree) or 0.5 (they disagree: no preference, never written).

429s, 408/5xx, timeouts and refused connections are retried with exponential backoff (or the
server's Retry-After) up to `retries` times; then, or on another error status, the stage fails
naming rlaif.judge.endpoint. Progress (pairs judged, requests, retries, tokens) is emitted as the
judge works; the token counts come from the server's `usage`.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rlhf_api import progress
from rlhf_api.rlaif_config import RlaifLabelConfig
from rlhf_api.served import JUDGE_API_KEY_ENV, JudgeEndpoint

from ..errors import StageError
from ..rlaif.labels import Judgement, constitution_text, judge_prompt
from .protocol import RETRY_STATUSES, backoff_seconds, status_kind, too_long
from .server_words import BARE_500_HINT, CHAT_TEMPLATE_ADVICE, mentions_chat_template, server_words

FIELD = "rlaif.judge.endpoint"
TOP_LOGPROBS = 5
NO_KEY = "EMPTY"  # what vLLM and SGLang accept when they run without a key
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class Verdict:
    p_first: float | None  # None: no verdict (the answer named neither label, no logprobs)
    method: str  # logprobs | parsed | unparsed


def label_probability(top: Sequence[tuple[str, float]], labels: Sequence[str]) -> float | None:
    """P(first label) from (token, logprob) pairs of the first answer token; None when neither
    label is among them."""
    found = [0.0, 0.0]
    seen = [False, False]
    for token, logprob in top:
        for i, label in enumerate(labels):
            if token.strip() == label:
                found[i] += math.exp(logprob)
                seen[i] = True
    if not any(seen):
        return None
    floor = min(math.exp(lp) for _, lp in top)
    first, second = (p if s else floor for p, s in zip(found, seen, strict=True))
    return first / (first + second)


def parse_label(text: str, labels: Sequence[str]) -> float | None:
    """1.0 if the answer names the first label first, 0.0 for the second, None for neither."""
    hits = []
    for i, label in enumerate(labels):
        match = re.search(rf"(?<!\w){re.escape(label)}(?!\w)", text)
        if match is not None:
            hits.append((match.start(), -len(label), i))
    if not hits:
        return None
    return 1.0 if min(hits)[2] == 0 else 0.0


class EndpointJudge:
    """`judge(pairs) -> [Judgement]` through an OpenAI-compatible server; see the module docstring."""

    def __init__(
        self,
        endpoint: JudgeEndpoint,
        config: RlaifLabelConfig,
        api_key: str | None = None,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        from openai import OpenAI

        self.endpoint = endpoint
        self.config = config
        self.constitution = constitution_text(config.constitution)
        self.sleep = sleep
        self.api_key = api_key
        # Our own retries (counted, reported, with the error named at the end): the client's are off.
        self.client = OpenAI(
            base_url=endpoint.url, api_key=api_key or NO_KEY, max_retries=0, timeout=endpoint.timeout_seconds
        )
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # one request failed for good: the others stop retrying
        self.counts = {"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.methods: list[str] = []

    def _count(self, **deltas: int) -> None:
        with self.lock:
            for key, value in deltas.items():
                self.counts[key] += value

    def _fail(self, message: str) -> StageError:
        return StageError(FIELD, f"judge {self.endpoint.url} (model {self.endpoint.model}): {message}")

    def _complete(self, text: str) -> Any:
        import openai

        attempts = self.endpoint.retries + 1
        extra: dict[str, Any] = {"logprobs": True, "top_logprobs": TOP_LOGPROBS} if self.endpoint.logprobs else {}
        problem = ""
        for attempt in range(1, attempts + 1):
            if self.stopping.is_set():
                raise self._fail("stopped: another request failed")
            retry_after = None
            self._count(requests=1)
            try:
                return self.client.chat.completions.create(
                    model=self.endpoint.model,
                    messages=[{"role": "user", "content": text}],
                    max_tokens=self.endpoint.max_tokens,
                    temperature=0.0,
                    **extra,
                )
            except openai.APITimeoutError:
                problem = f"no reply within timeoutSeconds {self.endpoint.timeout_seconds:g}"
            except openai.APIConnectionError as exc:
                problem = f"cannot reach it ({exc})"
            except openai.APIStatusError as exc:
                problem = self._status_problem(exc)
                if exc.status_code not in RETRY_STATUSES:
                    raise self._fail(f"{problem}; not retried ({status_kind(exc.status_code)})") from exc
                retry_after = exc.response.headers.get("retry-after")
            if attempt < attempts:
                wait = backoff_seconds(attempt, retry_after, budget=self.endpoint.timeout_seconds)
                if wait is None:
                    raise self._fail(f"{problem}; {too_long(retry_after, self.endpoint.timeout_seconds)}")
                self._count(retries=1)
                self.sleep(wait)
        if problem == "HTTP 500 (Internal Server Error)":
            problem += f"; {BARE_500_HINT}"
        raise self._fail(f"{problem}, after {attempts} attempt(s) (retries: {self.endpoint.retries})")

    def _status_problem(self, exc: Any) -> str:
        """HTTP <status> with the server's words (redacted, bounded), and advice where they call for it."""
        try:
            body = exc.response.content
        except Exception:  # a body that cannot be read: the status alone
            body = b""
        words = server_words(body, [self.api_key] if self.api_key else [])
        problem = f"HTTP {exc.status_code}" + (f" ({words})" if words else "")
        if mentions_chat_template(words):
            problem += f"; {CHAT_TEMPLATE_ADVICE}"
        return problem

    def verdict(self, prompt: str, first: str, second: str) -> Verdict:
        text = judge_prompt(self.config.judge_template, self.constitution, prompt, first, second)
        reply = self._complete(text)
        usage = getattr(reply, "usage", None)
        if usage is not None:
            self._count(
                prompt_tokens=int(usage.prompt_tokens or 0), completion_tokens=int(usage.completion_tokens or 0)
            )
        if not reply.choices:
            raise self._fail("the reply has no choices")
        choice = reply.choices[0]
        content = getattr(getattr(choice, "logprobs", None), "content", None)
        if content:
            top = [(t.token, t.logprob) for t in (content[0].top_logprobs or [])]
            top = top or [(content[0].token, content[0].logprob)]
            p = label_probability(top, self.config.labels)
            if p is not None:
                return Verdict(p, "logprobs")
        parsed = parse_label(choice.message.content or "", self.config.labels)
        return Verdict(None, "unparsed") if parsed is None else Verdict(parsed, "parsed")

    def judge(self, pairs: Sequence[tuple[str, str, str]]) -> list[Judgement]:
        """Both orders of each (prompt, a, b), `maxConcurrency` requests at a time."""
        jobs = [(p, a, b) for p, a, b in pairs] + [(p, b, a) for p, a, b in pairs]
        verdicts: list[Verdict | None] = [None] * len(jobs)
        done = 0
        last = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.endpoint.max_concurrency, thread_name_prefix="judge") as pool:
            futures = {pool.submit(self.verdict, *job): i for i, job in enumerate(jobs)}
            try:
                for future, index in futures.items():
                    verdicts[index] = future.result()
                    done += 1
                    if time.monotonic() - last >= PROGRESS_EVERY_S or done == len(jobs):
                        last = time.monotonic()
                        progress.emit("rlaif", event="judging", done=done // 2, total=len(pairs), **self.counts)
            except BaseException:
                self.stopping.set()
                for pending in futures:
                    pending.cancel()
                raise
        n = len(pairs)
        out = []
        self.methods = []
        for i, (p, a, b) in enumerate(pairs):
            a_first, b_first = verdicts[i], verdicts[n + i]
            assert a_first is not None and b_first is not None
            a_second = None if b_first.p_first is None else 1.0 - b_first.p_first
            out.append(Judgement(prompt=p, a=a, b=b, a_first=a_first.p_first, a_second=a_second))
            methods = {a_first.method, b_first.method}
            self.methods.append(methods.pop() if len(methods) == 1 else "mixed")
        self._verdicts = verdicts
        return out

    def metrics(self) -> dict[str, float]:
        verdicts = [v for v in getattr(self, "_verdicts", []) if v is not None]
        total = max(1, len(verdicts))
        return {
            "judge_requests": float(self.counts["requests"]),
            "judge_retries": float(self.counts["retries"]),
            "judge_prompt_tokens": float(self.counts["prompt_tokens"]),
            "judge_completion_tokens": float(self.counts["completion_tokens"]),
            "judge_logprobs_share": sum(v.method == "logprobs" for v in verdicts) / total,
            "judge_parsed_share": sum(v.method == "parsed" for v in verdicts) / total,
            "judge_unparsed": float(sum(v.method == "unparsed" for v in verdicts)),
        }


def endpoint_judge(endpoint: JudgeEndpoint, config: RlaifLabelConfig) -> EndpointJudge:
    api_key = None
    if endpoint.api_key is not None:
        api_key = os.environ.get(JUDGE_API_KEY_ENV)
        if not api_key:
            raise StageError(
                f"{FIELD}.apiKey",
                f"env {JUDGE_API_KEY_ENV} is not set (on a cluster the operator sets it from Secret "
                f"{endpoint.api_key.name}/{endpoint.api_key.key}; with rlhf run, export it)",
                kind="config",
            )
    return EndpointJudge(endpoint, config, api_key)
