"""Value checks shared by the merge methods' and fine-tuning methods' hyperparameter checks."""

from __future__ import annotations

import math


def number_ok(
    value,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
) -> bool:
    """Whether ``value`` is a finite number (not a bool; ``integer``: a whole one) within the bounds."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (not integer or float(value).is_integer())
    ok = ok and (lo is None or (value > lo if lo_open else value >= lo))
    return ok and (hi is None or (value < hi if hi_open else value <= hi))
