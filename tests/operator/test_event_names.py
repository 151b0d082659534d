"""Event names are valid DNS-1123 subdomains for any valid run name (issue 23, item 6): the API
server refuses an Event named `x...x..<digest>`, and the run then has no events at all."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from rlhf_operator.reconcile import event_body

# apimachinery's IsDNS1123Subdomain
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "run_name",
    [
        "demo",
        "x" * 199 + "." + "y" * 53,  # the cut ends in '.': old code gave '..'
        "x" * 199 + "-" + "y" * 53,  # the cut ends in '-': old code gave '-.'
        "a" * 197 + ".b." + "c" * 50,
        "a" * 253,
        "a.b.c",
        "1" * 200,
    ],
    ids=["short", "dot-at-200", "dash-at-200", "label-then-dot", "253", "dots", "digits"],
)
def test_event_names_are_dns_subdomains(run_name: str) -> None:
    assert len(run_name) <= 253 and SUBDOMAIN.match(run_name)
    meta = {"name": run_name, "namespace": "team", "uid": "u"}
    name = event_body(meta, "sft-start-1", "Normal", "StageStarted", "started", NOW)["metadata"]["name"]
    assert len(name) <= 253 and SUBDOMAIN.match(name), name
    assert ".." not in name and name == name.strip(".-")
