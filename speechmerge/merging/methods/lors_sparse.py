"""LoRS-Merging, sparse half only (magnitude pruning; Zhao et al. 2025, arXiv 2502.17380;
authors' ``model_merging/merge_fft-mp-merge.py``).

Matrix tensors (``ctx.is_matrix``): τ'_i = τ_i with all but its k = int(numel · keep_fraction)
largest-|·| entries zeroed (torch.topk on |τ_i| flattened, exactly k entries). It prunes the task
vector itself, not a residual after a low-rank part. Δ = λ · Σ_i τ'_i, λ = ``scaling``
(None -> 1/N; authors 0.2 with 5 experts).
Other tensors: Δ = λ · Σ_i τ_i, unpruned.
Defaults: keep_fraction 0.2, scaling None (= 1/N).
"""

from __future__ import annotations

from typing import Any

import torch

from speechmerge.merging.base import register
from speechmerge.merging.linalg import magnitude_prune
from speechmerge.merging.methods.lors import _PrunedTaskArithmetic


@register
class LoRSSparse(_PrunedTaskArithmetic):
    """Sparse-only LoRS (see module docstring)."""

    name = "lors_sparse"
    label = "LoRS sparse only"
    reference_url = "https://arxiv.org/abs/2502.17380"
    defaults: dict[str, Any] = {"scaling": None, "keep_fraction": 0.2}
    source = "Zhao et al. 2025, arXiv 2502.17380; qmgzhao/LoRS-Merging merge_fft-mp-merge.py"
    grid = {"scaling": [0.1, 0.2, 0.3, 0.4, 0.5]}
    grid_source = "as LoRS-Merging (the authors' 0.2 with 5 experts)"
    scale_param = "scaling"

    def prune(self, tau: torch.Tensor) -> torch.Tensor:
        return magnitude_prune(tau, float(self.hparams["keep_fraction"]))
