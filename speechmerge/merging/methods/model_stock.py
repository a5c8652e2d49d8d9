"""Model Stock (Jang, Yun & Han, ECCV 2024, arXiv 2403.19522; mergekit ``model_stock.py``;
FusionBench ``model_stock``). Per tensor ("layer-wise"):

    cos θ = mean over pairs i < j of cos(τ_i, τ_j),
    t = N cos θ / (1 + (N − 1) cos θ),
    θ = t · mean_i θ_i + (1 − t) · θ_0    ⇔    Δ = t · mean_i τ_i.

Pairwise cosines: <τ_i, τ_j> / (‖τ_i‖ ‖τ_j‖) accumulated in float64, clamped to [−1, 1]; a zero
task vector has cosine 0 with everything (mergekit instead clamps ‖τ_i‖‖τ_j‖ to ≥ 1e-6, which
drives t → 0 for small tensors with small updates; FusionBench adds 1e-8). The mean of cosines
follows mergekit; FusionBench averages the angles instead. Edge cases: N = 1 gives t = 1 (the
limit cos θ = 1: the merge is the expert; mergekit refuses fewer than two experts); if
1 + (N − 1) cos θ ≤ 1e-12 (experts pointing apart as much as possible) t = 0 (the base).
``filter_wise`` = True computes t per output row (dim 0) of tensors with ≥ 2 dims, as mergekit's
option; 1-D tensors are one row. Defaults: ``filter_wise`` False (mergekit, paper: per layer).
Every tensor is merged by this rule.
"""

from __future__ import annotations

from typing import Iterator

import torch

from speechmerge.merging.base import TensorContext, register
from speechmerge.merging.checks import check_bool
from speechmerge.merging.streaming import StreamingMethod, TensorSource
from speechmerge.merging.tensor_ops import cosine_matrix, gram

DEN_EPS = 1e-12


def stock_ratio(cos: torch.Tensor, n: int) -> torch.Tensor:
    """t = N c / (1 + (N−1) c), 0 where the denominator is ≤ 1e-12 (float64 in, float64 out)."""
    den = 1.0 + (n - 1) * cos
    ok = den > DEN_EPS
    return torch.where(ok, n * cos / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))


def mean_pairwise(C: torch.Tensor) -> torch.Tensor:
    """Mean of the strictly upper-triangular entries of the (..., N, N) cosine matrix."""
    n = C.shape[-1]
    iu = torch.triu_indices(n, n, offset=1, device=C.device)
    return C[..., iu[0], iu[1]].mean(-1)


@register
class ModelStock(StreamingMethod):
    """Model Stock: Δ = t · mean_i τ_i, t = N cos θ / (1 + (N − 1) cos θ) per tensor."""

    name = "model_stock"
    label = "Model Stock"
    reference_url = "https://arxiv.org/abs/2403.19522"
    defaults = {"filter_wise": False}
    source = "Jang et al. 2024 (Model Stock); mergekit model_stock.py (mean pairwise cosine)"

    def validate(self) -> None:
        check_bool(self, "filter_wise")

    def merge_stream(self, src: TensorSource, ctx: TensorContext) -> Iterator[torch.Tensor]:
        n = src.n
        if n == 1:
            for rows in src.chunks():
                yield src.delta(0, rows).clone()
            return
        if self.hparams["filter_wise"] and len(src.shape) >= 2:
            for rows in src.chunks():
                ds = src.deltas(rows)
                T = torch.stack([d.reshape(d.shape[0], -1) for d in ds], 1).double()  # R × N × k
                C = cosine_matrix(T @ T.transpose(1, 2))
                t = stock_ratio(mean_pairwise(C), n).float()  # R
                mean = sum(ds) / n
                yield mean * t.reshape(-1, *([1] * (mean.ndim - 1)))
            return
        G, _, _ = gram(src)
        t = float(stock_ratio(mean_pairwise(cosine_matrix(G)), n))
        for rows in src.chunks():
            yield (sum(src.deltas(rows)) / n) * t
