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
            elif name == "watch_namespaces":
                values[name] = [ns.strip() for ns in raw.split(",") if ns.strip()]
            else:  # strings and numbers: pydantic converts
                values[name] = raw
        return cls.model_validate(values)


_JSON_FIELDS = {"default_node_selector", "default_tolerations"}
