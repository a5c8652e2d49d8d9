"""TSV-M w/ NS: TSV-M with the SVD-based orthogonalisation replaced by Newton–Schulz iterations
(Carvalho et al. 2026, "Exploring the potential and limitations of Model Merging for
Multi-Domain Adaptation in ASR", arXiv 2603.05354; the schedule is a reconstruction: the paper's
code is not public; the coefficients are Keller Jordan's Muon quintic).

Matrix tensors: as TSV-M (``tsv_m``): per task keep k = max(1, r // N) top singular triplets,
stack U (m×Nk), S, V (n×Nk), but
    U⊥ = NS(U), V⊥ = NS(V), with NS = ``linalg.newton_schulz``:
        X₀ = A / (‖A‖_F + 1e-7) (on Aᵀ when A is tall, so the Gram matrix is the small one);
        repeat ``ns_steps`` (5) times: X ← a X + b (X Xᵀ) X + c (X Xᵀ)² X,
        (a, b, c) = ``ns_coefficients`` = (3.4445, −4.7750, 2.0315) (Muon).
    Δ = α · U⊥ S V⊥ᵀ.
NS keeps the singular vectors of the polar factor but the quintic does not converge to exactly
orthonormal: every singular value s of the stack with s/‖A‖_F ≥ 2e-3 ends in [0.68, 1.21] after
5 steps; directions where the tasks' subspaces overlap strongly (tiny s) are damped rather than
blown up, which is the intended stabilising effect. ``ns_coefficients="cubic"`` (1.5, −0.5, 0)
with many steps (≈ 30+) converges to the exact polar factor, i.e. to TSV-M, for comparison.
Other tensors: as TSV-M: Δ = α · mean_i τ_i (``non_matrix="mean"``) or α · Σ_i τ_i ("sum");
the SVD merge is restricted to attention/MLP matrices, as in ``tsv_m`` (docs/methods.md).

Defaults: scaling α = 1.0 (TSV-M's), ns_steps = 5, ns_coefficients = Muon's.
"""

from __future__ import annotations

from typing import Any

import torch

from speechmerge.merging.base import register
from speechmerge.merging.checks import check_number
from speechmerge.merging.linalg import NS_PRESETS, newton_schulz, ns_schedule
from speechmerge.merging.methods.tsv_m import TSVM


@register
class TSVMNewtonSchulz(TSVM):
    """TSV-M with Newton–Schulz orthogonalisation (see module docstring)."""

    name = "tsv_m_ns"
    label = "TSV-M w/ NS"
    device_capable = True
    reference_url = "https://arxiv.org/abs/2603.05354"
    defaults: dict[str, Any] = {**TSVM.defaults, "ns_steps": 5, "ns_coefficients": list(NS_PRESETS["muon"])}
    source = "Carvalho et al. 2026, arXiv 2603.05354 (TSV-M w/ NS); Muon Newton–Schulz quintic (K. Jordan 2024)"
    grid = {"scaling": [0.6, 0.8, 1.0, 1.2, 1.4]}
    grid_source = "alpha around TSV-M's 1.0 (project choice)"
    scale_param = "scaling"

    def validate(self) -> None:
        super().validate()
        check_number(self, "ns_steps", lo=1, integer=True)
        try:
            ns_schedule(int(self.hparams["ns_steps"]), self.hparams["ns_coefficients"])
        except (ValueError, TypeError) as err:
            raise ValueError(f"merge method {self.name!r}: hyperparameter 'ns_coefficients': {err}") from None

    def orthogonalize(self, m: torch.Tensor) -> torch.Tensor:
        return newton_schulz(m, steps=int(self.hparams["ns_steps"]), coefficients=self.hparams["ns_coefficients"])
