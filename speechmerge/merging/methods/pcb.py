"""PCB-Merging: Parameter Competition Balancing (Du et al., NeurIPS 2024; official code
duguodong7/pcb-merging ``pcb-merging.py::PCB_merge``).

Per tensor, N task vectors τ_i flattened to d entries; order statistics as the reference's
``clamp``: sorted ascending, lo = s[int(d·c)], hi = s[int(d·(1−c)) − 1] (Python indexing):
  clamp:  a_i = clip(|τ_i|, lo_i, hi_i) with c = ``clamp_ratio``;  τ̄_i = sign(τ_i) a_i;
  intra-balancing:  β_intra,i = exp(N · norm(a_i)²),  norm(x) = (x − min x)/(max x − min x);
  inter-balancing:  β_inter,i = tanh(τ_i ⊙ Σ_j τ_j)   (raw τ, as the reference);
  β_i = β_intra,i ⊙ β_inter,i;
  drop + rescale:  s_i = norm(max(β_i, q_i)) with q_i = sorted(β_i)[int(d·(1 − r))], i.e. all
      but the top fraction r = ``keep_fraction`` of β_i become 0, the rest are scaled into (0, 1];
  Δ = λ · Σ_i s_i ⊙ τ̄_i / max(Σ_i s_i, 1e-12).
(The reference's ``exp(N·x)`` is the unnormalised form of its paper's softmax(N·x); the softmax
denominator cancels in the min–max normalisation that follows.) Where norm() divides 0 by 0
(max = min): the intra term is exp(0) = 1 and s_i = [β_i > 0] (the reference returns NaN).

Defaults: ``keep_fraction`` r = 0.1 (``PCB_merge(..., pcb_ratio=0.1)``), ``clamp_ratio``
c = 1e-4 (``pcb-merging.py``; the repository's vision/NLP scripts use 0.01), ``scaling``
λ = 1.0 (the reference starts its evolutionary search of per-task λ at 1.0, bounds [0.8, 1.3];
its vision script uses 1.2 without search). ``matrices_only`` = False applies the drop to every
tensor; True keeps r = 1 for non-matrix tensors (balancing weights, no drop).
Deviation: statistics are per tensor, the reference flattens the whole model (one d); with
d < 1/c (< 10 000 entries) the clamp only clips the single largest |τ_i| to the second largest.
"""

from __future__ import annotations

from typing import Iterator

import torch

from speechmerge.merging.base import TensorContext, register
from speechmerge.merging.checks import check_bool, check_number
from speechmerge.merging.streaming import StreamingMethod, TensorSource
from speechmerge.merging.tensor_ops import abs_values, kth_smallest_


def _index(d: int, pos: float) -> int:
    """Python-style index int(pos) into a length-d sorted vector (negative wraps, as the reference)."""
    i = int(pos)
    return i + d if i < 0 else i


class _Stats:
    """Per-expert order statistics of one tensor."""

    def __init__(self, n: int) -> None:
        self.lo = [0.0] * n
        self.hi = [0.0] * n
        self.q = [0.0] * n
        self.top = [0.0] * n


def balance(tau: torch.Tensor, total: torch.Tensor, n: int, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(β_i, τ̄_i) for one expert chunk: the balancing score and the clamped values."""
    a = tau.abs().clamp_(min=lo, max=hi) if lo <= hi else torch.full_like(tau, hi)
    clamped = torch.sign(tau).mul_(a)
    beta = torch.mul(tau, total).tanh_()  # inter-balancing
    if hi > lo:  # intra-balancing exp(N · norm(a)²); exp(0) = 1 otherwise
        beta.mul_(a.sub_(lo).div_(hi - lo).square_().mul_(n).exp_())
    return beta, clamped


def scale_of(beta: torch.Tensor, q: float, top: float) -> torch.Tensor:
    """norm(max(β, q)) with min q and max ``top`` (new tensor); [β > 0] where top == q."""
    if top > q:
        return beta.clamp(min=q).sub_(q).div_(top - q)
    return (beta > 0).float()


@register
class Pcb(StreamingMethod):
    """PCB: intra × inter balancing scores, keep the top fraction, score-weighted mean."""

    name = "pcb"
    label = "PCB"
    reference_url = "https://arxiv.org/abs/2410.02396"
    defaults = {"keep_fraction": 0.1, "clamp_ratio": 1e-4, "scaling": 1.0, "matrices_only": False}
    source = "Du et al. 2024 (PCB-Merging); duguodong7/pcb-merging pcb-merging.py (ratio 0.1, clamp 1e-4)"
    grid = {"keep_fraction": [0.05, 0.1, 0.2], "scaling": [0.8, 1.0, 1.2]}
    grid_source = "PCB reference: ratio 0.1 (we add 0.05 and 0.2), lambda within its search bounds [0.8, 1.3]"
    scale_param = "scaling"

    def validate(self) -> None:
        check_number(self, "keep_fraction", 0.0, 1.0, lo_open=True)
        check_number(self, "clamp_ratio", 0.0, 0.5, hi_open=True)
        check_number(self, "scaling")
        check_bool(self, "matrices_only")

    def merge_stream(self, src: TensorSource, ctx: TensorContext) -> Iterator[torch.Tensor]:
        n, d = src.n, src.numel
        lam = float(self.hparams["scaling"])
        if d == 0:
            for rows in src.chunks():
                yield torch.zeros_like(src.base(rows))
            return
        c = float(self.hparams["clamp_ratio"])
        r = float(self.hparams["keep_fraction"]) if self.sparsify_here(ctx) else 1.0
        chunks = src.chunks()
        st = _Stats(n)
        # Pass 1: clamp bounds of |τ_i| (one expert's tensor at a time).
        i_lo, i_hi = _index(d, d * c), _index(d, d * (1 - c) - 1)
        for i in range(n):
            st.lo[i], st.hi[i] = kth_smallest_(abs_values(src, i), [i_lo, i_hi])
        # Σ_j τ_j, kept whole (one tensor), cut like the source.
        total = [sum(src.deltas(rows)) for rows in chunks]
        # Pass 2: drop threshold q_i and max of β_i (β_i of one expert at a time).
        i_q = _index(d, d * (1 - r))
        for i in range(n):
            beta = torch.empty(d, dtype=torch.float32, device="cpu")  # a host buffer (numpy partitions it)
            pos = 0
            for rows, t in zip(chunks, total):
                b = balance(src.delta(i, rows), t, n, st.lo[i], st.hi[i])[0].reshape(-1)
                beta[pos : pos + b.numel()] = b
                pos += b.numel()
            st.top[i] = float(beta.max())
            (st.q[i],) = kth_smallest_(beta, [i_q])
            del beta
        # Pass 3: merge.
        for rows, t in zip(chunks, total):
            num = torch.zeros_like(t)
            den = torch.zeros_like(t)
            for i, tau in enumerate(src.deltas(rows)):
                beta, clamped = balance(tau, t, n, st.lo[i], st.hi[i])
                s = scale_of(beta, st.q[i], st.top[i])
                num.addcmul_(s, clamped)
                den += s
            yield num.div_(den.clamp_(min=1e-12)).mul_(lam)
