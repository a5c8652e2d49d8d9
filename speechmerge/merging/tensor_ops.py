"""Element-wise tensor helpers of the task-vector methods: weighted sums, exact order
statistics (in place), magnitude thresholds, Gram matrices, TIES-style sign election, DARE's
drop-and-rescale."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from speechmerge.merging.streaming import TensorSource


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
    out = torch.empty(src.numel, dtype=torch.float32, device="cpu")  # a host buffer (numpy partitions it)
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
    G = torch.zeros(n, n, dtype=torch.float64, device="cpu")  # small: N x N, on the host
    bb = 0.0
    bt = torch.zeros(n, dtype=torch.float64, device="cpu")
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
    return torch.where(s == 0, torch.as_tensor(zero_sign, dtype=s.dtype, device=s.device), s)


def agree_mask(t: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """True where t has the elected sign γ = ±1 (strict: zeros never agree, sign(0) = 0 ≠ ±1)."""
    return torch.sign(t) == sign


def disjoint_sums(
    ts: list[torch.Tensor], sign: torch.Tensor, weights: list[float] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """TIES' disjoint merge, as the sums it divides: (Σ_i t_i [sign t_i = γ], Σ_i w_i [sign t_i = γ])
    per entry, w_i = 1 without ``weights``; the second is 1 where no t_i agrees (the merge is 0
    there). ``num / den`` is the disjoint (weighted) mean of TIES and DARE-TIES."""
    num = torch.zeros_like(ts[0])
    den = torch.zeros_like(ts[0])
    for i, t in enumerate(ts):
        m = agree_mask(t, sign)
        num += torch.where(m, t, 0.0)
        den += m if weights is None else weights[i] * m
    return num, torch.where(den == 0, torch.ones_like(den), den)


def dare_drop(t: torch.Tensor, drop_rate: float, rescale: bool, gen: torch.Generator) -> torch.Tensor:
    """DARE (Yu et al., ICML 2024): zero each entry with probability p, rescale survivors by 1/(1-p).

    keep ~ Bernoulli(1 - p) drawn as ``rand >= p`` from ``gen`` (consumed in call order), so
    E[result] = t when ``rescale``. Returns a new tensor.
    """
    if drop_rate == 0.0:
        return t.clone()
    # drawn where the generator is (the host: the same numbers on any machine), compared where t is
    keep = torch.rand(t.shape, generator=gen, dtype=torch.float32, device=gen.device).to(t.device) >= drop_rate
    out = t * keep
    if rescale:
        out /= 1.0 - drop_rate
    return out
