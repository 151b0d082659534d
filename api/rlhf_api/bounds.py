"""What the status schema can hold, for readers of outside bytes (logs, termination messages). Pure.

A Kubernetes `integer` is int64 and a JSON number must be finite: a value beyond either makes
the API server refuse the whole status patch, so a reader clamps or drops it before it gets there.
"""

from __future__ import annotations

import math
from typing import Any

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def is_number(value: Any) -> bool:
    """A JSON number (bool is not one, though Python says it is an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite_float(value: Any) -> float | None:
    """`value` as a finite float; None for what is not a number, not finite, or beyond a float."""
    if not is_number(value):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int of 10**400
        return None
    return number if math.isfinite(number) else None


def int64(value: Any, low: int = 0) -> int | None:
    """A whole count clamped to [low, INT64_MAX]; None for what is not a finite number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return max(low, min(INT64_MAX, value))
    number = finite_float(value)
    if number is None:
        return None
    return max(low, min(INT64_MAX, int(number)))


def in_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX
