"""A served model's explanation of a failure, fit for a stage message and the RLHFRun status.

Pure and total: any bytes in, a bounded one-line text out, never raising. The server's words
are its JSON error (OpenAI: error.message; FastAPI, e.g. transformers serve: detail; this
project's server: error) or else its body's first non-empty line; anything that looks like a
credential is replaced (a gateway may echo the Authorization header): the configured secret
values, `Bearer <token>`, `sk-...` keys, and `key=`/`token=`-style pairs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

MAX_CHARS = 300
_READ_CHARS = 64 * 1024  # a body is read no further than this
REDACTED = "[redacted]"
_PATTERNS = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',;]+"), r"\1 " + REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{4,}"), "sk-" + REDACTED),
    (
        re.compile(r"(?i)\b(api[_-]?key|access[_-]?token|token|password|secret)(\"?\s*[:=]\s*\"?)[^\s\"',;&]+"),
        r"\1\2" + REDACTED,
    ),
)
# Advice when the server says the model's tokenizer has no chat template (vLLM: 400 with this
# text; transformers serve: a bare 500 "Internal Server Error", see docs/served-models.md).
CHAT_TEMPLATE_ADVICE = (
    "the served model's tokenizer has no chat template: give it one (tokenizer_config.json "
    "'chat_template', or the server's --chat-template option); see docs/served-models.md"
)

BARE_500_HINT = (
    "if this is transformers serve, its bare 500 often means the model's tokenizer has no chat "
    "template (its log says so); see docs/served-models.md"
)


def _from_json(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    for key in ("error", "detail", "message"):
        found = value.get(key)
        if isinstance(found, dict):
            inner = _from_json(found)
            if inner:
                return inner
        elif isinstance(found, str) and found.strip():
            return found
        elif isinstance(found, list) and found:
            return json.dumps(found)[:_READ_CHARS]
    return None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the secret values and anything that looks like a credential replaced."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
        # a header value "Bearer abc": the token alone may be echoed too
        token = secret.split()[-1] if secret.split() else ""
        if len(token) >= 4:
            text = text.replace(token, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def server_words(body: bytes | str | None, secrets: Iterable[str] = (), limit: int = MAX_CHARS) -> str:
    """The server's explanation in `body`, redacted, on one line of at most `limit` characters
    ("" when it said nothing)."""
    try:
        if body is None:
            return ""
        text = body[:_READ_CHARS].decode("utf-8", "replace") if isinstance(body, bytes) else body[:_READ_CHARS]
        try:
            words = _from_json(json.loads(text))
        except ValueError:
            words = None
        if words is None:
            words = next((line for line in text.splitlines() if line.strip()), "")
        words = " ".join(redact(words, secrets).split())
        return words if len(words) <= limit else words[: limit - 1] + "…"
    except Exception:  # total: a strange body never hides the failure it explains
        return ""


def mentions_chat_template(words: str) -> bool:
    return re.search(r"(?i)chat[ _]template", words) is not None
