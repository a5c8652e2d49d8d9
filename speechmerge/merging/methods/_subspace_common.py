"""Shared by the subspace / pruning methods (Iso-*, TSV-M*, LoRS*): the matrix-or-elementwise
streaming base class, the rule for tensors that are not attention/MLP matrices, and
hyperparameter checks that name the key."""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch

from speechmerge.merging.base import TensorContext
from speechmerge.merging.methods._common import StreamingMethod, TensorSource

NON_MATRIX_RULES = ("mean", "sum")


class MatrixOrElementwiseMethod(StreamingMethod):
    """Attention/MLP matrices (``ctx.is_matrix``) are merged whole by ``merge_matrix`` (an SVD
    needs the whole matrix; Whisper-base's largest, 2048×512, is one engine chunk anyway); every
    other tensor by ``merge_elementwise`` chunk by chunk, so the 51865×d token embedding never
    has to be held N times in memory. ``merge_tensor`` (in-memory) gives bit-identical results.
    """

    def merge_matrix(self, taus: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def merge_elementwise(self, taus: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def merge_stream(self, src: TensorSource, ctx: TensorContext) -> Iterator[torch.Tensor]:
        if ctx.is_matrix:
            if len(src.shape) != 2:
                raise ValueError(
                    f"merge method {self.name!r}: tensor {ctx.key!r} is marked as a matrix "
                    f"but has shape {tuple(src.shape)}"
                )
            delta = self.merge_matrix([d.float() for d in src.deltas(None)]).float()
            for rows in src.chunks():
                yield delta if rows is None else delta[rows]
        else:
            for rows in src.chunks():
                yield self.merge_elementwise([d.float() for d in src.deltas(rows)]).float()


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
