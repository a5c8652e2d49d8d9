"""Iso-C: isotropic merging in the common subspace (Marczak et al. 2025, "No Task Left Behind",
arXiv 2502.04959; reference code: danielm1405/iso-merging and FusionBench
``fusion_bench/method/isotropic_merging/iso_utils.py::iso_c``).

Matrix tensors (``ctx.is_matrix``; attention and MLP linear weights):
    M = Σ_i τ_i = U diag(σ) Vᵀ            (thin SVD, r = min(m, n) singular values)
    σ̄ = (1/r) Σ_{j=1..r} σ_j              (mean over *all* r singular values, zeros included)
    Δ = α · σ̄ · U Vᵀ                      (every direction of M gets the same singular value)
Other tensors (biases, norms, embeddings, convolutions): Δ = α · mean_i τ_i (``non_matrix="mean"``,
the reference's rule for its non-2-D tensors, which it averages and then scales with the whole
merged vector by α), or α · Σ_i τ_i with ``non_matrix="sum"`` (task arithmetic with the same α).
Scope: the reference code SVD-merges every 2-D tensor, the token embedding included; we SVD-merge
only the attention/MLP matrices and merge every other tensor by the non-matrix rule. Whisper's
token embedding is tied to the output projection (a vocabulary table, not a linear map whose
subspaces the method reasons about), and its SVD would need the whole 51865×d tensor of every
expert in memory, which the streaming engine avoids (docs/methods.md).

Defaults: scaling α = 1.0 (FusionBench ``config/method/isotropic_merging/iso_c.yaml``; the paper
selects α on held-out validation data, so sweep it on the dev split).
If M is exactly rank deficient, the directions of its zero singular values are LAPACK's
arbitrary (but deterministic) completion, exactly as in the reference.
"""

from __future__ import annotations

from typing import Sequence

import torch

from speechmerge.merging.base import register
from speechmerge.merging.checks import check_choice, check_number
from speechmerge.merging.linalg import svd
from speechmerge.merging.streaming import NON_MATRIX_RULES, MatrixOrElementwiseMethod, combine


def iso_c_matrix(deltas: Sequence[torch.Tensor]) -> torch.Tensor:
    """σ̄ · U Vᵀ for M = Σ τ_i = U diag(σ) Vᵀ (unscaled Iso-C of one matrix)."""
    u, s, vh = svd(combine(deltas, "sum"))
    return (u * s.mean()) @ vh


@register
class IsoC(MatrixOrElementwiseMethod):
    """Iso-C (see module docstring)."""

    name = "iso_c"
    label = "Iso-C"
    device_capable = True
    reference_url = "https://arxiv.org/abs/2502.04959"
    defaults = {"scaling": 1.0, "non_matrix": "mean"}
    source = "Marczak et al. 2025, arXiv 2502.04959 (Iso-C); FusionBench iso_utils.iso_c"
    grid = {"scaling": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]}
    grid_source = "Iso-C tunes alpha on validation data; range around FusionBench's 1.0 (project choice)"
    scale_param = "scaling"

    def validate(self) -> None:
        check_number(self, "scaling")
        check_choice(self, "non_matrix", NON_MATRIX_RULES)

    def merge_matrix(self, taus: list[torch.Tensor]) -> torch.Tensor:
        return float(self.hparams["scaling"]) * iso_c_matrix(taus)

    def merge_elementwise(self, taus: list[torch.Tensor]) -> torch.Tensor:
        return float(self.hparams["scaling"]) * combine(taus, self.hparams["non_matrix"])
