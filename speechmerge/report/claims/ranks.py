"""Spearman rank correlation of two rank allocations, with a permutation p-value and a
bootstrap interval over modules (the S2-LoRA rank-allocation claim)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from speechmerge.evaluation import stats as S


# ----- rank correlation ------------------------------------------------------------------------
def aligned_ranks(a: Mapping[str, int], b: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """The ranks of the modules both allocations adapt, matched by (module type, layer) whatever
    the prefix of their names (peft's ``base_model.model.`` or none)."""
    from speechmerge.report.figures import rank_grid

    def cells(ranks):
        grid, labels, layers = rank_grid(ranks)
        return {
            (lab, layer): grid[i, j]
            for i, lab in enumerate(labels)
            for j, layer in enumerate(layers)
            if np.isfinite(grid[i, j])
        }

    ca, cb = cells(a), cells(b)
    keys = sorted(set(ca) & set(cb))
    return np.asarray([ca[k] for k in keys]), np.asarray([cb[k] for k in keys])


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ of every row pair of [B, n] arrays (average ranks for ties; NaN if constant)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def spearman_test(x: Sequence[float], y: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Spearman ρ of two paired vectors; two-sided permutation p-value (y permuted ``n_boot``
    times: (1 + #{|ρ*| ≥ |ρ|}) / (n_boot + 1)); percentile 95 % CI from resampling the pairs."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two vectors of the same length, got {x.shape} and {y.shape}")
    n = x.size
    out = {"rho": math.nan, "p_value": math.nan, "ci": (math.nan, math.nan), "n": n}
    if n < 3:
        return {**out, "note": f"{n} modules in common: too few for a rank correlation"}
    rho = float(_spearman_rows(x[None], y[None])[0])
    if math.isnan(rho):
        return {**out, "note": "one allocation gives every module the same rank: correlation undefined"}
    rng = np.random.default_rng(seed)
    perm = np.argsort(rng.random((n_boot, n)), axis=1)
    null = _spearman_rows(np.broadcast_to(x, (n_boot, n)), y[perm])
    null = null[np.isfinite(null)]
    p = (1.0 + float(np.sum(np.abs(null) >= abs(rho) - 1e-12))) / (null.size + 1.0)
    idx = rng.integers(0, n, size=(n_boot, n))
    boot = _spearman_rows(x[idx], y[idx])
    boot = boot[np.isfinite(boot)]
    ci = S.percentile_interval(boot) if boot.size else (math.nan, math.nan)
    return {**out, "rho": rho, "p_value": min(1.0, p), "ci": ci}
