"""Iso-C: isotropic merging in the common subspace (Marczak et al. 2025, "No Task Left Behind",
arXiv 2502.04959; reference code: danielm1405/iso-merging and FusionBench
``fusion_bench/method/isotropic_merging/iso_utils.py::iso_c``).

Matrix tensors (``ctx.is_matrix``; attention and MLP linear weights):
    M = Σ_i τ_i = U diag(σ) Vᵀ            (thin SVD, r = min(m, n) singular values)
    σ̄ = (1/r) Σ_{j=1..r} σ_j              (mean over *all* r singular values, zeros included)
    Δ = α · σ̄ · U Vᵀ                      (every direction of M gets the same singular value)
Other tensors (biases, norms, embeddings, convolutions): Δ = α · mean_i τ_i (``non_matrix="mean"``,
as in the reference, which averages them and then scales the whole merged vector by α), or
α · Σ_i τ_i with ``non_matrix="sum"`` (task arithmetic with the same α).

Defaults: scaling α = 1.0 (FusionBench ``config/method/isotropic_merging/iso_c.yaml``; the paper
selects α on held-out validation data, so sweep it on the dev split).
If M is exactly rank deficient, the directions of its zero singular values are LAPACK's
arbitrary (but deterministic) completion, exactly as in the reference.
"""

from __future__ import annotations

from typing import Sequence

import torch

from speechmerge.merging.base import register
from speechmerge.merging.linalg import svd
from speechmerge.merging.methods._subspace_common import (
    NON_MATRIX_RULES,
    MatrixOrElementwiseMethod,
    check_choice,
    check_number,
    combine,
)


def iso_c_matrix(deltas: Sequence[torch.Tensor]) -> torch.Tensor:
    """σ̄ · U Vᵀ for M = Σ τ_i = U diag(σ) Vᵀ (unscaled Iso-C of one matrix)."""
    u, s, vh = svd(combine(deltas, "sum"))
    return (u * s.mean()) @ vh


@register
class IsoC(MatrixOrElementwiseMethod):
    """Iso-C (see module docstring)."""

    name = "iso_c"
    defaults = {"scaling": 1.0, "non_matrix": "mean"}
    source = "Marczak et al. 2025, arXiv 2502.04959 (Iso-C); FusionBench iso_utils.iso_c"

    def validate(self) -> None:
        check_number(self.name, self.hparams, "scaling")
        check_choice(self.name, self.hparams, "non_matrix", NON_MATRIX_RULES)

    def merge_matrix(self, taus: list[torch.Tensor]) -> torch.Tensor:
        return float(self.hparams["scaling"]) * iso_c_matrix(taus)

    def merge_elementwise(self, taus: list[torch.Tensor]) -> torch.Tensor:
        return float(self.hparams["scaling"]) * combine(taus, self.hparams["non_matrix"])
