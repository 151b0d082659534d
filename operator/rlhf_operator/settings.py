"""Operator settings, read once from the environment (the Helm chart sets these)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .plan import DEFAULT_TRAINER_IMAGE

ENV_PREFIX = "RLHF_"


class OperatorSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    trainer_image: str = Field(default=DEFAULT_TRAINER_IMAGE, description="RLHF_TRAINER_IMAGE")
    trainer_image_pull_policy: str | None = Field(default=None, description="RLHF_TRAINER_IMAGE_PULL_POLICY")
    watch_namespaces: list[str] = Field(
        default_factory=list, description="RLHF_WATCH_NAMESPACES, comma-separated; empty: cluster-wide"
    )
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="RLHF_METRICS_PORT; 0 disables")
    default_node_selector: dict[str, str] = Field(
        default_factory=dict, description="RLHF_DEFAULT_NODE_SELECTOR (JSON): for stages that set none"
    )
    default_tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="RLHF_DEFAULT_TOLERATIONS (JSON): added to every stage's pods"
    )
    pod_start_check_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="RLHF_POD_START_CHECK_SECONDS: how often the pods of an attempt not started yet are read",
    )
    stage_network_policy: bool = Field(
        default=True,
        description="RLHF_STAGE_NETWORK_POLICY: create each run's NetworkPolicy (only its own pods reach them)",
    )
    allowed_images: list[str] = Field(
        default_factory=list,
        description=(
            "RLHF_ALLOWED_IMAGES, comma-separated shell-style patterns (fnmatch: * ? [..]), e.g. "
            "'ghcr.io/rlhf-dev/rlhf-trainer:*,registry.example.com/ml/*'; empty: any image"
        ),
    )
    progress_interval_seconds: float = Field(
        default=30.0,
        ge=0,
        description=(
            "RLHF_PROGRESS_INTERVAL_SECONDS: each running stage's Master pod log is read for progress at most "
            "this often (one pods/log GET, then at most one status patch); 0 turns progress, guards and the hang "
            "deadline off"
        ),
    )
    progress_tail_lines: int = Field(
        default=500, ge=1, le=100000, description="RLHF_PROGRESS_TAIL_LINES: the most log lines one read fetches"
    )
    leader_election_namespace: str | None = Field(
        default=None,
        description=(
            "RLHF_LEADER_ELECTION_NAMESPACE: hold a Lease there so that of several replicas one acts "
            "(controller/leader.py); empty: no election, this process always acts (one replica, tests)"
        ),
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorSettings:
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None or raw == "":
                continue
            if name in _JSON_FIELDS:
                values[name] = json.loads(raw)
            elif name in _LIST_FIELDS:
                values[name] = [item.strip() for item in raw.split(",") if item.strip()]
            else:  # strings and numbers: pydantic converts
                values[name] = raw
        return cls.model_validate(values)


_JSON_FIELDS = {"default_node_selector", "default_tolerations"}
_LIST_FIELDS = {"watch_namespaces", "allowed_images"}
