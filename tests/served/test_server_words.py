"""The server's words in a failure message (issue 24, items 3 and 7): its JSON error or first
line, bounded, with anything that looks like a credential replaced. Pure."""

from __future__ import annotations

import json

import pytest
from rlhf_trainer.serving.server_words import MAX_CHARS, mentions_chat_template, redact, server_words


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"error": {"message": "model not found", "type": "x"}}, "model not found"),  # OpenAI, vLLM
        ({"detail": "Server is pinned to '/m'; requested 'x'."}, "Server is pinned to '/m'; requested 'x'."),
        ({"error": "2 prompts but 1 responses"}, "2 prompts but 1 responses"),  # rlhf serve-reward
        ({"object": "error", "message": "bad\\nrequest"}, "bad\\nrequest"),
        ("\n\nupstream connect error\nsecond line", "upstream connect error"),
        ("", ""),
    ],
)
def test_the_servers_explanation_is_kept(body: object, words: str) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)
    assert server_words(raw.encode()) == words


def test_credentials_are_replaced_and_the_length_bounded() -> None:
    echoed = server_words(b'{"error": {"message": "bad token Bearer SECRET123 for sk-abcdef123456"}}')
    assert "SECRET123" not in echoed and "abcdef123456" not in echoed
    assert echoed.startswith("bad token Bearer [redacted]")
    assert "s3cr3t-value" not in server_words(b"header was s3cr3t-value", secrets=["s3cr3t-value"])
    assert "tok42tok" not in server_words(b"got tok42tok", secrets=["Bearer tok42tok"])  # the token alone, too
    assert "hunter2" not in redact('{"api_key": "hunter2"}') and "hunter2" not in redact("password=hunter2&x=1")
    long = server_words(b"x" * 100_000)
    assert len(long) == MAX_CHARS and long.endswith("…")
    assert server_words(b"\xff\xfe garbage \x00") != "SECRET"  # any bytes: no exception
    assert mentions_chat_template("tokenizer.chat_template is not set") and not mentions_chat_template("other")
