"""Shared pieces of the parameter-space and task-vector-space methods.

1. The chunked ("streaming") protocol. ``MergeMethod.merge_tensor(base, deltas, ctx)`` needs
   every expert's whole tensor at once, so its memory is N tensors; for Whisper's token
   embedding (51865 x d_model, a third of Whisper-base) that is more than the whole rest of
   the merge. A ``StreamingMethod`` instead implements ``merge_stream(src, ctx)``: it reads
   rows of the base and of the task vectors through a ``TensorSource`` (any number of passes,
   e.g. one for statistics such as a Gram matrix or a top-k threshold, one to combine) and
   yields the merged delta chunk by chunk, for the row ranges ``src.chunks()`` in order.
   ``merge_tensor`` is kept (it runs ``merge_stream`` over in-memory tensors with the same
   chunking), so both paths give bit-identical results. The engine uses ``merge_stream`` when a
   method has it and ``merge_tensor`` otherwise.
2. Hyperparameter checks that name the key, and expert weights.
3. Order statistics (exact k-th values, in place) and TIES-style sign election.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from speechmerge.merging.base import MergeMethod, TensorContext

# Elements per expert per chunk (4 MiB of float32). Tensors up to this size are one chunk.
CHUNK_ELEMS = 1 << 20

def row_chunks(shape: Sequence[int], chunk_elems: int | None = None) -> list[slice | None]:
    """Row ranges (over dim 0) of at most ``chunk_elems`` elements (at least one row each).

    A 0-d tensor is a single chunk ``None`` (= the whole tensor). Depends only on the shape, so
    every run, and the in-memory and streaming paths, cut a tensor the same way.
    """
    if len(shape) == 0:
        return [None]
    chunk_elems = CHUNK_ELEMS if chunk_elems is None else chunk_elems
    rows = int(shape[0])
    row_numel = max(1, math.prod(int(s) for s in shape[1:]))
    step = max(1, chunk_elems // row_numel)
    return [slice(a, min(a + step, rows)) for a in range(0, rows, step)] or [slice(0, 0)]


class TensorSource:
    """Read-only float32 access, by row range, to one tensor of the base and of N task vectors.

    ``rows`` is a slice over dim 0 or None (the whole tensor). Returned tensors may be shared
    (cached or views of the caller's data): never modify them in place.
    """

    key: str
    shape: torch.Size
    n: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def chunks(self) -> list[slice | None]:
        return row_chunks(self.shape)

    def base(self, rows: slice | None = None) -> torch.Tensor:
        raise NotImplementedError

    def delta(self, i: int, rows: slice | None = None) -> torch.Tensor:
        raise NotImplementedError

    def deltas(self, rows: slice | None = None) -> list[torch.Tensor]:
        return [self.delta(i, rows) for i in range(self.n)]


class InMemorySource(TensorSource):
    """A ``TensorSource`` over tensors already in memory (tests, ``merge_tensor``)."""

    def __init__(self, key: str, base: torch.Tensor, deltas: Sequence[torch.Tensor]) -> None:
        if len(deltas) == 0:
            raise ValueError(f"tensor {key!r}: no task vectors given")
        for i, d in enumerate(deltas):
            if tuple(d.shape) != tuple(base.shape):
                raise ValueError(
                    f"tensor {key!r}: task vector {i} has shape {tuple(d.shape)}, base has {tuple(base.shape)}"
                )
        self.key, self.shape, self.n = key, base.shape, len(deltas)
        self._base, self._deltas = base, list(deltas)

    @staticmethod
    def _rows(t: torch.Tensor, rows: slice | None) -> torch.Tensor:
        return (t if rows is None else t[rows]).float()

    def base(self, rows: slice | None = None) -> torch.Tensor:
        return self._rows(self._base, rows)

    def delta(self, i: int, rows: slice | None = None) -> torch.Tensor:
        return self._rows(self._deltas[i], rows)


class StreamingMethod(MergeMethod):
    """A method that merges chunk by chunk (see the module docstring)."""

    def merge_stream(self, src: TensorSource, ctx: TensorContext) -> Iterator[torch.Tensor]:
        """Yield the merged delta (float32) for each row range of ``src.chunks()``, in order."""
        raise NotImplementedError

    def merge_tensor(
        self, base: torch.Tensor, deltas: Sequence[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        src = InMemorySource(ctx.key, base, deltas)
        parts = list(self.merge_stream(src, ctx))
        if len(parts) == 1:
            return parts[0].reshape(base.shape)
        return torch.cat(parts, 0)

    # -- helpers for subclasses ------------------------------------------------------------
    def sparsify_here(self, ctx: TensorContext) -> bool:
        """False when ``matrices_only`` is set and the tensor is not an attention/MLP matrix."""
        return not (self.hparams.get("matrices_only") and not ctx.is_matrix)


# ---------------------------------------------------------------------------------------
# Hyperparameter checks (ValueError naming the method and the key)
# ---------------------------------------------------------------------------------------


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
) -> None:
    v = method.hparams[key]
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (not integer or float(v).is_integer())
    ok = ok and (lo is None or (v > lo if lo_open else v >= lo))
    ok = ok and (hi is None or (v < hi if hi_open else v <= hi))
    if not ok:
        rng = ("(" if lo_open else "[") + f"{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}" + (
            ")" if hi_open else "]"
        )
        _fail(method, key, f"{'an integer' if integer else 'a finite number'} in {rng}")


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
    ok = isinstance(w, (list, tuple)) and len(w) > 0 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in w
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
            f"merge method {method.name!r}: hyperparameter {key!r} has {len(w)} values "
            f"but {n} experts are merged"
        )
    w = [float(x) for x in w]
    if normalize:
        s = math.fsum(w)
        w = [x / s for x in w]
    return w


# ---------------------------------------------------------------------------------------
# Numerical helpers
# ---------------------------------------------------------------------------------------


def weighted_sum(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Σ_i w_i t_i accumulated in one float32 buffer (expert order fixed: deterministic)."""
    out = tensors[0] * float(weights[0])
    for w, t in zip(weights[1:], tensors[1:]):
        if w != 0.0:
            out.add_(t, alpha=float(w))
    return out


def kth_smallest_(buf: torch.Tensor, ks: Sequence[int]) -> list[float]:
    """Exact order statistics (0-based ranks ``ks``) of a scratch float tensor, in O(n).

    Partitions ``buf`` in place (numpy introselect), so no second copy is made: pass a tensor
    you own (e.g. the result of ``.abs()``), it is left permuted.
    """
    if not buf.is_contiguous():
        raise ValueError("kth_smallest_ needs a contiguous tensor that it may permute")
    arr = buf.detach().view(-1).numpy()
    idx = sorted(set(int(k) for k in ks))
    arr.partition(idx)
    return [float(arr[int(k)]) for k in ks]


def abs_values(src: TensorSource, i: int) -> torch.Tensor:
    """|τ_i| of the whole tensor, flattened, in one new buffer filled chunk by chunk."""
    out = torch.empty(src.numel, dtype=torch.float32)
    pos = 0
    for rows in src.chunks():
        d = src.delta(i, rows).reshape(-1)
        torch.abs(d, out=out[pos : pos + d.numel()])
        pos += d.numel()
    return out


def magnitude_threshold(src: TensorSource, i: int, keep_fraction: float) -> float | None:
    """|τ_i| value at rank k = int(numel · keep_fraction) from the top: keep entries |τ_i| ≥ it.

    None means keep everything (keep_fraction ≥ 1 or k = numel); +inf means keep nothing (k = 0).
    Ties at the threshold are all kept (as the TIES reference's ``>= kthvalue``).
    """
    d = src.numel
    k = int(d * keep_fraction)
    if keep_fraction >= 1.0 or k >= d:
        return None
    if k <= 0:
        return math.inf
    (thr,) = kth_smallest_(abs_values(src, i), [d - k])
    return thr


def gram(src: TensorSource, *, with_base: bool = False) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Float64 Gram matrix G_ij = <τ_i, τ_j> over the whole tensor, accumulated chunk by chunk.

    With ``with_base`` also <θ_0, θ_0> and the vector <θ_0, τ_i> (for weight-space methods).
    """
    n = src.n
    G = torch.zeros(n, n, dtype=torch.float64)
    bb = 0.0
    bt = torch.zeros(n, dtype=torch.float64)
    for rows in src.chunks():
        T = torch.stack([d.reshape(-1) for d in src.deltas(rows)]).double()
        G += T @ T.T
        if with_base:
            b = src.base(rows).reshape(-1).double()
            bb += float(b @ b)
            bt += T @ b
        del T
    return G, bb, bt


def cosine_matrix(G: torch.Tensor) -> torch.Tensor:
    """cos_ij = G_ij / sqrt(G_ii G_jj) for Gram matrices (..., N, N); 0 where a vector is zero;
    clamped to [-1, 1]."""
    norms = G.diagonal(dim1=-2, dim2=-1).clamp(min=0).sqrt()
    prod = norms[..., :, None] * norms[..., None, :]
    safe = torch.where(prod > 0, prod, torch.ones_like(prod))
    return torch.where(prod > 0, G / safe, torch.zeros_like(G)).clamp(-1.0, 1.0)


def elect_sign(total: torch.Tensor, zero_sign: torch.Tensor | float) -> torch.Tensor:
    """sign(total) as ±1 floats; entries where total == 0 get ``zero_sign`` (±1)."""
    s = torch.sign(total)
    return torch.where(s == 0, torch.as_tensor(zero_sign, dtype=s.dtype), s)


def agree_mask(t: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """True where t has the elected sign γ = ±1 (strict: zeros never agree, sign(0) = 0 ≠ ±1)."""
    return torch.sign(t) == sign


def dare_drop(t: torch.Tensor, drop_rate: float, rescale: bool, gen: torch.Generator) -> torch.Tensor:
    """DARE (Yu et al., ICML 2024): zero each entry with probability p, rescale survivors by 1/(1-p).

    keep ~ Bernoulli(1 - p) drawn as ``rand >= p`` from ``gen`` (consumed in call order), so
    E[result] = t when ``rescale``. Returns a new tensor.
    """
    if drop_rate == 0.0:
        return t.clone()
    keep = torch.rand(t.shape, generator=gen, dtype=torch.float32) >= drop_rate
    out = t * keep
    if rescale:
        out /= 1.0 - drop_rate
    return out
