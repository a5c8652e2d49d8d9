"""Small helpers shared by the subspace / pruning methods (Iso-*, TSV-M*, LoRS*): input checks,
hyperparameter checks that name the key, and the rule for tensors that are not attention/MLP
matrices."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from speechmerge.merging.base import TensorContext

NON_MATRIX_RULES = ("mean", "sum")


def float_deltas(
    method: str, base: torch.Tensor, deltas: Sequence[torch.Tensor], ctx: TensorContext
) -> list[torch.Tensor]:
    """The task vectors as float32, after checking there is one at least and shapes match."""
    if len(deltas) == 0:
        raise ValueError(f"{method}: no task vectors given for tensor {ctx.key!r}")
    for i, d in enumerate(deltas):
        if tuple(d.shape) != tuple(base.shape):
            raise ValueError(
                f"{method}: task vector {i} of tensor {ctx.key!r} has shape {tuple(d.shape)}, "
                f"base has {tuple(base.shape)}"
            )
    return [d.float() for d in deltas]


def combine(deltas: Sequence[torch.Tensor], rule: str) -> torch.Tensor:
    """'mean' = (1/N) Σ τ_i, 'sum' = Σ τ_i; accumulated in place (no N-fold stack in memory)."""
    acc = deltas[0].float().clone()
    for d in deltas[1:]:
        acc += d.float()
    if rule == "mean":
        acc /= len(deltas)
    elif rule != "sum":
        raise ValueError(f"unknown non-matrix rule {rule!r}; known: {NON_MATRIX_RULES}")
    return acc


def check_number(
    method: str,
    hp: dict[str, Any],
    key: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    allow_none: bool = False,
    integer: bool = False,
) -> None:
    value = hp[key]
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        lo_s = "" if lo is None else ("(" if lo_open else "[") + f"{lo}, "
        hi_s = "" if hi is None else f"{hi}" + (")" if hi_open else "]")
        rng = f" in {lo_s or '(-inf, '}{hi_s or 'inf)'}" if (lo is not None or hi is not None) else ""
        kind = "an integer" if integer else "a finite number"
        none = " or null" if allow_none else ""
        raise ValueError(f"merge method {method!r}: hyperparameter {key!r} must be {kind}{rng}{none}, got {value!r}")


def check_choice(method: str, hp: dict[str, Any], key: str, choices: Sequence[str]) -> None:
    if hp[key] not in choices:
        raise ValueError(
            f"merge method {method!r}: hyperparameter {key!r} must be one of {list(choices)}, got {hp[key]!r}"
        )
