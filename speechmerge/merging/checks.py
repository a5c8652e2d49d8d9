"""Hyperparameter checks shared by the merging methods: each raises a ValueError naming the
method, the hyperparameter and the value; ``expert_weights`` resolves per-expert weights."""

from __future__ import annotations

import math
from typing import Sequence

from speechmerge.checks import number_ok
from speechmerge.merging.base import MergeMethod


def _fail(method: MergeMethod, key: str, what: str) -> None:
    raise ValueError(
        f"merge method {method.name!r}: hyperparameter {key!r} must be {what}, got {method.hparams[key]!r}"
    )


def check_number(
    method: MergeMethod,
    key: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
    allow_none: bool = False,
) -> None:
    """A finite number (``integer``: a whole one) within the bounds; ``allow_none``: or null."""
    v = method.hparams[key]
    if v is None and allow_none:
        return
    if not number_ok(v, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, integer=integer):
        what = "an integer" if integer else "a finite number"
        if lo is not None or hi is not None:
            what += " in " + ("(" if lo_open else "[") + f"{'-inf' if lo is None else lo}, "
            what += f"{'inf' if hi is None else hi}" + (")" if hi_open else "]")
        _fail(method, key, what + (" or null" if allow_none else ""))


def check_bool(method: MergeMethod, key: str) -> None:
    if not isinstance(method.hparams[key], bool):
        _fail(method, key, "true or false")


def check_choice(method: MergeMethod, key: str, choices: Sequence[str]) -> None:
    if method.hparams[key] not in choices:
        _fail(method, key, f"one of {list(choices)}")


def check_weights(
    method: MergeMethod, key: str = "weights", *, positive_sum: bool = True, nonnegative: bool = True
) -> None:
    """``None`` (uniform) or a non-empty list of finite numbers (length checked at merge time)."""
    w = method.hparams[key]
    if w is None:
        return
    ok = (
        isinstance(w, (list, tuple))
        and len(w) > 0
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in w)
    )
    ok = ok and (not nonnegative or all(x >= 0 for x in w))
    ok = ok and (not positive_sum or sum(w) > 0)
    if not ok:
        what = "null or a list of finite numbers, one per expert"
        if nonnegative:
            what += ", non-negative"
        if positive_sum:
            what += ", with a positive sum"
        _fail(method, key, what)


def expert_weights(method: MergeMethod, n: int, key: str = "weights", *, normalize: bool) -> list[float]:
    """The per-expert weights: uniform when None; divided by their sum when ``normalize``."""
    w = method.hparams[key]
    if w is None:
        w = [1.0] * n
    elif len(w) != n:
        raise ValueError(
            f"merge method {method.name!r}: hyperparameter {key!r} has {len(w)} values but {n} experts are merged"
        )
    w = [float(x) for x in w]
    if normalize:
        s = math.fsum(w)
        w = [x / s for x in w]
    return w
