"""Served models (issue 19): a reward source behind HTTP and an OpenAI-compatible RLAIF judge.

Torch-free, like the rest of the contract: the operator validates these, turns their Secret
references into pod env (`secret_env`), and the trainer's `rlhf_trainer.serving` is the client.

The remote reward protocol (version 1), served by `rlhf serve-reward MODEL_DIR`:

    POST <url>   Content-Type: application/json
    {"prompts": ["...", ...], "responses": ["...", ...],
     "columns": {"answer": ["...", ...], ...}}       # the dataset's other columns, one value per item
    -> 200 {"scores": [0.73, -1.2, null, ...]}      # one per item, in order

A score is a finite JSON number, or null for "no verdict on this item" (left out of the sum,
as a reward function's None). A reply with another count, a non-number (string, bool, NaN) or no
`scores` list is refused: the stage fails naming the source. 429, 5xx (other than 501), 408,
timeouts and refused connections are retried with exponential backoff (honouring Retry-After up
to the request's timeout) up to `retries` times, then the stage fails naming the source; other
4xx fail at once. Any 2xx with a valid body is a success.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from .camel_model import CamelModel, field_errors
from .model_config import ModelConfig

if TYPE_CHECKING:
    from .stage_config import StageCommon

PROTOCOL_VERSION = 1
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"  # an HTTP token (RFC 9110)
HTTP_URL = r"^https?://[^\s/?#]+[^\s]*$"
# Env var (in the stage's pod) that holds header j of reward source i, or the judge's API key.
_HEADER_ENV = "RLHF_REWARD_{source}_HEADER_{header}"
JUDGE_API_KEY_ENV = "RLHF_JUDGE_API_KEY"


class SecretKeySelector(CamelModel):
    """A key of a Secret in the run's namespace (Kubernetes' secretKeyRef)."""

    name: str = Field(min_length=1, max_length=253, description="Secret name in the run's namespace.")
    key: str = Field(min_length=1, max_length=253, description="Key within the Secret.")


def _reference_only(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError("must be a reference to a Secret ({name: ..., key: ...}), never a literal value")
    return value


class SecretHeader(CamelModel):
    """One HTTP header whose value comes from a Secret (e.g. Authorization: Bearer ...)."""

    name: str = Field(min_length=1, max_length=128, pattern=HEADER_NAME, description="Header name.")
    secret_key_ref: SecretKeySelector = Field(
        description="The Secret key holding the header's whole value (e.g. 'Bearer abc...')."
    )

    @field_validator("secret_key_ref", mode="before")
    @classmethod
    def _no_literal(cls, value: Any) -> Any:
        return _reference_only(value)


class HttpClientOptions(CamelModel):
    """How the trainer calls a served model: time limit, retries with backoff, parallel requests."""

    timeout_seconds: float = Field(
        default=60.0, gt=0.0, le=3600.0, description="Time limit of one request (connect, send, wait, read)."
    )
    retries: int = Field(
        default=5,
        ge=0,
        le=20,
        description=(
            "Retries of a request after a 429, 408, 5xx, timeout or refused connection, with exponential "
            "backoff (0.5 s doubling, at most 30 s); a server's Retry-After is honoured up to timeoutSeconds "
            "(at least 30 s), and one asking for more fails the stage at once. Then the stage fails."
        ),
    )
    max_concurrency: int = Field(default=4, ge=1, le=256, description="Requests in flight at once.")


class RemoteReward(HttpClientOptions):
    """type remote: a reward model (or any scorer) behind HTTP, speaking the protocol in rlhf_api.served."""

    url: str = Field(
        min_length=8,
        max_length=2048,
        pattern=HTTP_URL,
        description=(
            "The scoring endpoint, e.g. http://reward-server.rlhf.svc:8000/score (rlhf serve-reward serves "
            "POST /score). Receives {prompts, responses, columns}, answers {scores: [one number or null per item]}."
        ),
    )
    headers: list[SecretHeader] = Field(
        default_factory=list,
        max_length=8,
        description="Headers sent with each request, their values from Secrets (never literal values).",
    )
    batch_size: int = Field(default=64, ge=1, le=4096, description="Items per request.")

    @field_validator("headers")
    @classmethod
    def _distinct_headers(cls, value: list[SecretHeader]) -> list[SecretHeader]:
        names = [h.name.lower() for h in value]
        if len(set(names)) != len(names):
            raise ValueError("header names must differ")
        return value


class JudgeEndpoint(HttpClientOptions):
    """An OpenAI-compatible chat completions server (vLLM, SGLang, KServe, a hosted API) as the judge."""

    url: str = Field(
        min_length=8,
        max_length=2048,
        pattern=HTTP_URL,
        description="The API's base URL, e.g. http://judge.rlhf.svc:8000/v1 (the client adds /chat/completions).",
    )
    model: str = Field(min_length=1, max_length=256, description="The model name the server knows the judge by.")
    api_key: SecretKeySelector | None = Field(
        default=None,
        description="The Secret key holding the API key (sent as a Bearer token). None: no key (a local server).",
    )
    logprobs: bool = Field(
        default=True,
        description=(
            "Ask for the top log-probabilities of the first answer token and read P(A) vs P(B) from them; "
            "false (or a server that returns none): parse the label from the answer text."
        ),
    )
    max_tokens: int = Field(
        default=1, ge=1, le=1024, description="Tokens the judge may answer with (the label is read from its start)."
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _no_literal(cls, value: Any) -> Any:
        return _reference_only(value)


class JudgeModel(ModelConfig):
    """The RLAIF judge: a model loaded in the stage's pod (`name`), or a served one (`endpoint`)."""

    # One of name and endpoint (CEL twin below).
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "has(self.name) != has(self.endpoint)", "message": "set exactly one of name and endpoint"}
            ]
        }
    )

    name: str | None = Field(  # type: ignore[assignment]  # optional here: an endpoint judge has none
        default=None,
        min_length=1,
        max_length=512,
        description=(
            "A causal LM loaded in the stage's pod: Hugging Face hub id, a path on the run's volume, or "
            "'builtin:arithmetic-judge'. Exactly one of name and endpoint."
        ),
    )
    endpoint: JudgeEndpoint | None = Field(
        default=None,
        description=(
            "An OpenAI-compatible server that answers as the judge (choices: labels). Exactly one of name and endpoint."
        ),
    )

    @model_validator(mode="after")
    def _one_of(self) -> JudgeModel:
        if (self.name is None) == (self.endpoint is None):
            raise field_errors(["name: set exactly one of name and endpoint"])
        return self


def header_env(source_index: int, header_index: int) -> str:
    """The env var holding header `header_index` of the stage's reward source `source_index`."""
    return _HEADER_ENV.format(source=source_index, header=header_index)


def secret_env(section: StageCommon) -> list[tuple[str, SecretKeySelector]]:
    """(env var, Secret key) for every served model the stage section calls: its remote reward
    sources' headers and its endpoint judge's API key. The operator turns each into a
    secretKeyRef env var of the stage's pods; `rlhf run` reads them from its own environment."""
    refs: list[tuple[str, SecretKeySelector]] = []
    for i, source in enumerate(section.reward_sources()):
        remote = source.remote
        for j, header in enumerate(remote.headers if remote is not None else []):
            refs.append((header_env(i, j), header.secret_key_ref))
    endpoint = section.judge_endpoint()
    if endpoint is not None and endpoint.api_key is not None:
        refs.append((JUDGE_API_KEY_ENV, endpoint.api_key))
    return refs


def served_urls(section: StageCommon) -> list[str]:
    """The URLs the stage's pods call (for a per-run NetworkPolicy's egress rules)."""
    urls = [s.remote.url for s in section.reward_sources() if s.remote is not None]
    endpoint = section.judge_endpoint()
    return urls + ([endpoint.url] if endpoint is not None else [])


def url_label(url: str) -> str:
    """A metric label from a URL's host (e.g. reward-server from http://reward-server.ns.svc:8000/score)."""
    host = re.sub(r"^https?://", "", url).split("/", 1)[0].split("@")[-1].split(":", 1)[0]
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", host.split(".", 1)[0] if not host[:1].isdigit() else host)
    return label or "remote"
