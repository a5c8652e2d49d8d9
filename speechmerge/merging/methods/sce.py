"""SCE: Select, Calculate, Erase (Wan et al. 2024, FuseChat-2.0 tech report, arXiv 2408.07990;
mergekit ``sce.py``; the authors' fork FuseAI/FuseChat ``mergekit/merge_methods/sce_merging.py``).

Per tensor, N task vectors τ_i:
  Select:    v = Var_i(τ_i) per entry (population variance across experts); keep the entries whose
             v is among the k = int(ρ · #{v ≠ 0}) largest (ρ = ``keep_fraction``; ties at the
             threshold kept; k = 0 keeps nothing; if no variance is non-zero, i.e. the
             experts agree everywhere, all entries are kept where mergekit keeps none):
             τ̂_i = τ_i ⊙ mask.
  Calculate: w_i = mean(τ̂_i²) / Σ_j mean(τ̂_j²)  (uniform when all are 0).
  Erase:     γ = sign(Σ_i τ̂_i) with γ = +1 where the sum is 0; e_i = [sign τ̂_i = γ].
  Δ = Σ_i w_i e_i τ̂_i / Σ_i w_i e_i   (0 where no expert is left).
As mergekit's ``sce.py``, the selected (masked) task vectors are merged; the authors' fork uses
the mask only to compute w_i and merges the unmasked τ_i. mergekit switches to uniform weights
when Σ_j mean(τ̂_j²) < 1e-6, which for fine-tuning-sized updates (|τ| ~ 1e-4) would always
happen; here only an exact 0 does.
Defaults: ``keep_fraction`` ρ = 0.1 (FuseChat's ``fusechat-sce.yml``: ``select_topk: 0.1``;
mergekit's default 1.0 disables the selection). ``matrices_only`` = False selects in every
tensor; True skips the selection (ρ = 1) for non-matrix tensors.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from speechmerge.merging.base import TensorContext, register
from speechmerge.merging.checks import check_bool, check_number
from speechmerge.merging.streaming import StreamingMethod, TensorSource
from speechmerge.merging.tensor_ops import agree_mask, elect_sign, kth_smallest_


def variance(ds: list[torch.Tensor]) -> torch.Tensor:
    """Population variance across experts, entry by entry: (1/N) Σ_i (τ_i − mean)².

    Two elementwise passes (torch.var over dim 0 of the stacked chunk is far slower on CPU)."""
    mean = sum(ds) / len(ds)
    var = torch.zeros_like(mean)
    for d in ds:
        var.add_((d - mean).square_())
    return var.div_(len(ds))


@register
class Sce(StreamingMethod):
    """SCE: select top-variance entries, weight by squared magnitude, erase minority signs."""

    name = "sce"
    label = "SCE"
    reference_url = "https://arxiv.org/abs/2408.07990"
    defaults = {"keep_fraction": 0.1, "matrices_only": False}
    source = "Wan et al. 2024 (FuseChat-2.0 SCE, select_topk=0.1); mergekit sce.py"
    grid = {"keep_fraction": [0.1, 0.2, 0.3]}
    grid_source = "SCE's select_topk 0.1 and two larger fractions (project choice; the paper fixes 0.1)"
    scale_param = None

    def validate(self) -> None:
        check_number(self, "keep_fraction", 0.0, 1.0, lo_open=True)
        check_bool(self, "matrices_only")

    def variance_threshold(self, src: TensorSource, rho: float) -> float | None:
        """Smallest variance kept (None: keep all; +inf: keep none)."""
        if rho >= 1.0:
            return None
        d = src.numel
        var = torch.empty(d, dtype=torch.float32, device="cpu")  # a host buffer (numpy partitions it)
        pos = 0
        for rows in src.chunks():
            v = variance(src.deltas(rows)).reshape(-1)
            var[pos : pos + v.numel()] = v
            pos += v.numel()
        nonzero = int(torch.count_nonzero(var))
        if nonzero == 0:  # experts agree everywhere: nothing to select by
            return None
        k = int(rho * nonzero)
        if k == 0:
            return math.inf
        (thr,) = kth_smallest_(var, [d - k])
        return thr

    def merge_stream(self, src: TensorSource, ctx: TensorContext) -> Iterator[torch.Tensor]:
        rho = float(self.hparams["keep_fraction"]) if self.sparsify_here(ctx) else 1.0
        thr = self.variance_threshold(src, rho)

        masks: dict[int, torch.Tensor] = {}  # chunk -> selection mask (bool), computed once

        def selected(j: int, rows: slice | None) -> list[torch.Tensor]:
            ds = src.deltas(rows)
            if thr is None:
                return ds
            if j not in masks:
                masks[j] = variance(ds) >= thr
            return [d * masks[j] for d in ds]

        sq = torch.zeros(src.n, dtype=torch.float64, device="cpu")
        for j, rows in enumerate(src.chunks()):
            sq += torch.stack([(t.double() ** 2).sum() for t in selected(j, rows)])
        if float(sq.sum()) == 0.0:
            w = [1.0 / src.n] * src.n
        else:
            w = [float(x) for x in sq / sq.sum()]  # mean(τ̂²) ∝ Σ τ̂² (same numel)
        for j, rows in enumerate(src.chunks()):
            ts = selected(j, rows)
            sign = elect_sign(sum(ts), 1.0)
            num = torch.zeros_like(ts[0])
            den = torch.zeros_like(ts[0])
            for wi, t in zip(w, ts):
                m = agree_mask(t, sign)
                num += (wi * t) * m
                den += wi * m
            yield num / torch.where(den == 0, torch.ones_like(den), den)
