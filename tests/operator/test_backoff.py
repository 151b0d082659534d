"""The retry backoff doubles and stops at 360 s, as the Job controller's does (issue 16, item 9)."""

from __future__ import annotations

import pytest
from rlhf_api.validation import parse_run
from rlhf_operator.plan import plan
from rlhf_operator.reconcile import backoff_seconds

from .conftest import base_run


@pytest.mark.parametrize(
    ("base", "attempt", "seconds"),
    [
        (60, 1, 60),
        (60, 2, 120),
        (60, 3, 240),
        (60, 4, 360),  # capped (would be 480)
        (60, 19, 360),  # was 60 * 2**18 s: about 182 days
        (0, 20, 0),
        (10, 6, 320),
        (10, 7, 360),
        (600, 1, 600),  # a larger base is its own cap
        (600, 5, 600),
        (86400, 20, 86400),
    ],
)
def test_backoff_is_capped(base: int, attempt: int, seconds: int) -> None:
    stage = plan(parse_run(base_run("demo")), "/workspace", "img")[0].model_copy(update={"retry_backoff_seconds": base})
    assert backoff_seconds(stage, attempt) == seconds
