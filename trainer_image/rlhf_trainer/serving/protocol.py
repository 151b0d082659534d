"""The remote reward protocol (documented in rlhf_api.served): request building, reply checking,
and the retry schedule shared by the reward client and the endpoint judge. Pure, no I/O."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

# Statuses worth another try: rate limited, timed out, or a server error that may pass.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


class ProtocolError(ValueError):
    """A reply that does not follow the protocol (never retried: the server answered, wrongly)."""


def request_body(
    prompts: Sequence[str], responses: Sequence[str], columns: Mapping[str, Sequence[Any]]
) -> dict[str, Any]:
    return {
        "prompts": list(prompts),
        "responses": list(responses),
        "columns": {name: [_jsonable(v) for v in values] for name, values in columns.items()},
    }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def parse_request(body: Any) -> tuple[list[str], list[str], dict[str, list[Any]]]:
    """The server's side: (prompts, responses, columns); ProtocolError on a malformed request."""
    if not isinstance(body, dict):
        raise ProtocolError("the request must be a JSON object with prompts and responses")
    prompts, responses = body.get("prompts"), body.get("responses")
    columns = body.get("columns") or {}
    if not isinstance(prompts, list) or not isinstance(responses, list):
        raise ProtocolError("prompts and responses must be lists of strings")
    if len(prompts) != len(responses):
        raise ProtocolError(f"{len(prompts)} prompts but {len(responses)} responses")
    if not all(isinstance(t, str) for t in [*prompts, *responses]):
        raise ProtocolError("prompts and responses must be lists of strings")
    if not isinstance(columns, dict) or not all(
        isinstance(v, list) and len(v) == len(prompts) for v in columns.values()
    ):
        raise ProtocolError("columns must map each column name to a list with one value per item")
    return prompts, responses, columns


def parse_scores(body: Any, expected: int) -> list[float | None]:
    """The client's side: one finite number (or null) per item, in order; ProtocolError otherwise."""
    scores = body.get("scores") if isinstance(body, dict) else None
    if not isinstance(scores, list):
        raise ProtocolError('the reply has no "scores" list')
    if len(scores) != expected:
        raise ProtocolError(f"the reply has {len(scores)} scores for {expected} items (one per item expected)")
    out: list[float | None] = []
    for index, score in enumerate(scores):
        if score is None:
            out.append(None)
            continue
        # bool is an int in Python, but true is not a score.
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise ProtocolError(f"score {index} is {score!r}, not a finite number (or null)")
        out.append(float(score))
    return out


def retry_budget(timeout_seconds: float) -> float:
    """The longest wait a server's Retry-After may ask for: the request's timeout, at least 30 s."""
    return max(BACKOFF_MAX_S, timeout_seconds)


def backoff_seconds(
    attempt: int, retry_after: str | None = None, rng: random.Random | None = None, budget: float = BACKOFF_MAX_S
) -> float | None:
    """Wait before retry number `attempt` (1, 2, ...): the server's Retry-After (seconds) in full
    when it is within retry_budget (`budget`: the request's timeoutSeconds), None when it asks
    for more (the caller fails rather than ask early); else 0.5 s doubling with jitter, at most 30 s."""
    if retry_after is not None:
        try:
            asked = float(retry_after)
        except ValueError:
            asked = math.nan  # an HTTP date: use our own schedule
        if math.isfinite(asked):
            return max(0.0, asked) if asked <= retry_budget(budget) else None
    delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
    return delay * (0.5 + (rng or random).random() / 2)


def too_long(retry_after: str | None, timeout_seconds: float) -> str:
    return (
        f"the server asks to retry after {retry_after} s, more than this client waits "
        f"({retry_budget(timeout_seconds):g} s: timeoutSeconds, at least 30); raise timeoutSeconds to wait for it"
    )


def status_kind(status: int) -> str:
    """What an HTTP status that is not retried is, for a failure message."""
    if 200 <= status < 300:
        return "a success status without the expected body"
    if 300 <= status < 400:
        return "a redirect, not followed"
    if 400 <= status < 500:
        return "a client error"
    return "a server error"


def batches(count: int, size: int) -> list[range]:
    return [range(start, min(count, start + size)) for start in range(0, count, size)]
