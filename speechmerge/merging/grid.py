"""Merging every point of a hyperparameter grid from one read of the experts.

A grid is ``{param: [values]}`` (a method's ``grid``, or the config's); its points are the
Cartesian product, in the order the parameters and values are given. Points that differ only in
the method's ``scale_param`` (Δ(λ) = λ · Δ(1), e.g. the final scaling of task arithmetic, TIES,
TSV-M, LoRS) share one merge: the engine merges once at λ = 1 and a point is θ₀ + λ · Δ(1). The
other parameters (TIES' keep fraction, BoostedTSV-M's β) need a merge each, but all of them are
computed tensor by tensor in the same pass, so every expert tensor is read once for the whole grid
(with several merges, a tensor is read whole and each merge sees it from memory).

The deltas are held in memory (float32, one model-sized copy per distinct non-scale point), which
for Whisper base is 0.29 GB each.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from speechmerge.merging.base import MergeMethod, TensorContext, get_method, is_matrix
from speechmerge.merging.linalg import svd_reuse
from speechmerge.merging.safetensors_io import Checkpoint
from speechmerge.merging.streaming import InMemorySource


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The points of a grid in order: ``{"a": [1, 2], "b": [3]}`` -> ``[{a: 1, b: 3}, {a: 2, b: 3}]``."""
    for param, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"grid parameter {param!r}: give a non-empty list of values, got {values!r}")
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"grid parameter {param!r}: repeated values in {list(values)}")
    params = list(grid)
    return [dict(zip(params, combo)) for combo in itertools.product(*(grid[p] for p in params))]


@dataclass(frozen=True)
class GridPoint:
    """One grid point: its hyperparameters (over the method's base hyperparameters), the merge it
    shares (``group``) and the factor its delta gets (``scale``, 1.0 without a scale parameter)."""

    hparams: dict[str, Any]
    group: int
    scale: float


def plan_grid(
    method_name: str, base_hparams: Mapping[str, Any], points: Sequence[Mapping[str, Any]]
) -> tuple[list[MergeMethod], list[GridPoint]]:
    """The merges a grid needs (one method instance per distinct non-scale setting, with the scale
    parameter at 1) and, per point, which merge and factor give it. Every point's hyperparameters
    are validated by the method (a bad value raises naming the parameter)."""
    cls_method = get_method(method_name, dict(base_hparams))
    scale_param = type(cls_method).scale_param
    groups: list[MergeMethod] = []
    keys: dict[str, int] = {}
    out = []
    for point in points:
        hp = {**base_hparams, **point}
        get_method(method_name, hp)  # validates the point as a merge would
        scale = 1.0
        if scale_param is not None and hp.get(scale_param) is not None:
            scale = float(hp[scale_param])
            hp_group = {**hp, scale_param: 1.0}
        else:
            hp_group = hp
        key = repr(sorted(hp_group.items()))
        if key not in keys:
            keys[key] = len(groups)
            groups.append(get_method(method_name, hp_group))
        out.append(GridPoint(hparams=dict(point), group=keys[key], scale=scale))
    return groups, out


def merge_grid(
    base_weights: str,
    task_vector_paths: Sequence[str],
    method_name: str,
    base_hparams: Mapping[str, Any],
    points: Sequence[Mapping[str, Any]],
    *,
    seed: int = 0,
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]], list[GridPoint], dict[str, Any]]:
    """Merge every distinct non-scale setting of a grid in one pass over the files.

    Returns the base state dict (as stored), one delta state dict per merge (float32), the grid
    points (which delta and factor each uses) and an info dict (merges, wall time)."""
    from speechmerge.merging.engine import FileSource, check_inputs, output_specs

    t0 = time.perf_counter()
    groups, grid_points = plan_grid(method_name, base_hparams, points)
    base = Checkpoint(base_weights, f"base {base_weights}")
    inputs = [Checkpoint(p, f"task vector {i} ({p})") for i, p in enumerate(task_vector_paths)]
    try:
        check_inputs(base.specs, [(c.label, c.specs) for c in inputs], same_dtype=False)
        specs = output_specs(base.specs, delta_only=True)
        base_sd: dict[str, torch.Tensor] = {}
        deltas: list[dict[str, torch.Tensor]] = [{} for _ in groups]
        bar = tqdm(base.specs.items(), total=len(base.specs), desc=f"merge {method_name} grid ({len(groups)} merges)",
                   unit="tensor", disable=not progress, mininterval=1.0)  # fmt: skip
        for key, spec in bar:
            base_sd[key] = base.read(key)
            if not spec.is_float or math.prod(spec.shape) == 0:
                for d in deltas:
                    d[key] = torch.zeros(spec.shape, dtype=specs[key].torch_dtype, device="cpu")
                continue
            src = FileSource(key, base, inputs, False)
            if len(groups) > 1:  # read each expert tensor once, whole, for every merge of the grid
                src = InMemorySource(key, src.base(), src.deltas())
            ctx = TensorContext(key, is_matrix(key, torch.empty(spec.shape, device="meta")), seed)
            # the merges of one tensor decompose each matrix once (e.g. BoostedTSV-M's β values)
            with svd_reuse() if len(groups) > 1 else contextlib.nullcontext():
                for g, method in enumerate(groups):
                    deltas[g][key] = _merged_tensor(method, src, ctx, spec.shape, method_name)
    finally:
        base.close()
        for c in inputs:
            c.close()
    info = {
        "method": method_name,
        "merges": [m.hparams for m in groups],
        "points": len(grid_points),
        "merge_wall_s": round(time.perf_counter() - t0, 3),
    }
    return base_sd, deltas, grid_points, info


def _merged_tensor(method: MergeMethod, src, ctx: TensorContext, shape, method_name: str) -> torch.Tensor:
    from speechmerge.merging.engine import merged_deltas

    pieces = [(rows, delta) for rows, delta in merged_deltas(method, src, ctx)]
    full = pieces[0][1] if len(pieces) == 1 else torch.cat([p for _, p in pieces], 0)
    full = full.reshape(shape)
    lo, hi = torch.aminmax(full) if full.numel() else (torch.zeros((), device="cpu"), torch.zeros((), device="cpu"))
    if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        raise ValueError(
            f"merge method {method_name!r} ({method.hparams}) produced non-finite values in tensor {ctx.key!r}"
        )
    return full


def point_weights(
    base_sd: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor], scale: float
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, θ₀ + scale · Δ) for every tensor, in the base's dtype (non-float tensors as stored);
    the same arithmetic as the engine's ``θ₀ + Δ`` with Δ scaled first."""
    for key, b in base_sd.items():
        if not b.is_floating_point():
            yield key, b
            continue
        d = delta[key] if scale == 1.0 else delta[key] * scale
        yield key, (b.float() + d).to(b.dtype)
