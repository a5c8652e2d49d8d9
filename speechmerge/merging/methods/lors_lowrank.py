"""LoRS-Merging, low-rank half only ("singular value pruning"; Zhao et al. 2025, arXiv 2502.17380;
authors' ``model_merging/merge_fft-svp-merge.py``).

Matrix tensors (``ctx.is_matrix``): τ'_i = L_i = best rank-r approximation of τ_i (truncated SVD),
r = ``rank`` if given, else max(1, int(rank_fraction · min(m, n))) (authors: int(768 · 0.01) = 7 on
Whisper-small; see ``lors``); Δ = λ · Σ_i τ'_i, λ = ``scaling`` (None -> 1/N; authors 0.2 with 5).
Other tensors: Δ = λ · Σ_i τ_i, unpruned.
Defaults: rank_fraction 0.01, rank None, scaling None (= 1/N).
"""

from __future__ import annotations

from typing import Any

import torch

from speechmerge.merging.base import register
from speechmerge.merging.linalg import low_rank_approx
from speechmerge.merging.methods.lors import _PrunedTaskArithmetic


@register
class LoRSLowRank(_PrunedTaskArithmetic):
    """Low-rank-only LoRS (see module docstring)."""

    name = "lors_lowrank"
    label = "LoRS low-rank only"
    device_capable = True
    reference_url = "https://arxiv.org/abs/2502.17380"
    defaults: dict[str, Any] = {"scaling": None, "rank_fraction": 0.01, "rank": None}
    source = "Zhao et al. 2025, arXiv 2502.17380; qmgzhao/LoRS-Merging merge_fft-svp-merge.py"
    grid = {"scaling": [0.1, 0.2, 0.3, 0.4, 0.5]}
    grid_source = "as LoRS-Merging (the authors' 0.2 with 5 experts)"
    scale_param = "scaling"

    def prune(self, tau: torch.Tensor) -> torch.Tensor:
        return low_rank_approx(tau, self.rank_for(tau.shape))
