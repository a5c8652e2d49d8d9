"""Iso-CTS: isotropic merging in common and task-specific subspaces (Marczak et al. 2025,
arXiv 2502.04959; reference code: danielm1405/iso-merging and FusionBench
``fusion_bench/method/isotropic_merging/iso_utils.py::iso_cts``, followed step by step).

Matrix tensors (``ctx.is_matrix``), N task vectors τ_i of shape m×n, r = min(m, n):
    1. sizes:  k_c = int(r · f)  (f = common_space_fraction);
               T = round((r − k_c) / N) · N  (Python round, half to even, as in the reference;
               if T > r we use T − N, the reference would fail there); k_c ← r − T; d = T / N.
       So the common space plus N task-specific blocks of d directions fill exactly r directions.
    2. common: M = Σ_i τ_i = U diag(σ) Vᵀ;  U_c = U[:, :k_c], σ_c = σ[:k_c], V_c = V[:, :k_c].
    3. task-specific: R_i = τ_i − U_c U_cᵀ τ_i (project out the common left subspace);
               R_i's top-d singular triplets (u_i, s_i, v_i).
    4. stack   U_s = [U_c, u_1, …, u_N] (m×r), V_s = [V_c, v_1, …, v_N] (n×r),
               s = [σ_c, s_1, …, s_N] (r values).
    5. isotropic value σ̄ = mean(s): the mean of the k_c top singular values of Σ τ_i *and* of the
               N·d kept singular values of the residuals R_i (exactly the reference's choice).
    6. U⊥ = polar(U_s), V⊥ = polar(V_s) (``orthogonalizer="polar"``, via SVD, as in the
               reference), or Newton–Schulz (``"newton_schulz"``: 5 Muon quintic steps, the
               BoostedTSV-M paper's variant, reconstruction);
       Δ = α · σ̄ · U⊥ V⊥ᵀ.
   The order of the blocks does not matter (polar(A P) = polar(A) P for a permutation P).
   common_space_fraction = 1 (or d = 0) gives exactly Iso-C.
Other tensors: Δ = α · mean_i τ_i (``non_matrix="mean"``, the reference's rule for non-2-D
tensors) or α · Σ_i τ_i ("sum").
Scope: the reference code SVD-merges every 2-D tensor, the token embedding included; we SVD-merge
only the attention/MLP matrices and merge every other tensor by the non-matrix rule. Whisper's
token embedding is tied to the output projection (a vocabulary table, not a linear map whose
subspaces the method reasons about), and its SVD would need the whole 51865×d tensor of every
expert in memory, which the streaming engine avoids (docs/methods.md).

Defaults: scaling α = 1.0, common_space_fraction = 0.8 (FusionBench
``config/method/isotropic_merging/iso_cts.yaml``; iso-merging ``config/method/iso_cts.yaml``;
the paper tunes α on validation data).
"""

from __future__ import annotations

from typing import Sequence

import torch

from speechmerge.merging.base import register
from speechmerge.merging.checks import check_choice, check_number
from speechmerge.merging.linalg import newton_schulz, polar_factor, svd, truncated_svd
from speechmerge.merging.streaming import NON_MATRIX_RULES, MatrixOrElementwiseMethod, combine

ORTHOGONALIZERS = ("polar", "newton_schulz")


def iso_cts_sizes(r: int, n_tasks: int, common_space_fraction: float) -> tuple[int, int]:
    """(k_c, d): common-space size and directions per task, with k_c + n_tasks · d == r."""
    k_c = int(r * common_space_fraction)
    total_ts = round((r - k_c) / n_tasks) * n_tasks
    if total_ts > r:
        total_ts -= n_tasks
    total_ts = max(total_ts, 0)
    return r - total_ts, total_ts // n_tasks


def iso_cts_matrix(
    deltas: Sequence[torch.Tensor], common_space_fraction: float, orthogonalizer: str = "polar"
) -> torch.Tensor:
    """σ̄ · U⊥ V⊥ᵀ for one matrix (unscaled Iso-CTS; see the module docstring)."""
    taus = [d.float() for d in deltas]
    r = min(taus[0].shape)
    k_c, d = iso_cts_sizes(r, len(taus), common_space_fraction)
    u, s, vh = svd(combine(taus, "sum"))
    u_c = u[:, :k_c]
    us, ss, vhs = [u_c], [s[:k_c]], [vh[:k_c, :]]
    if d > 0:
        for tau in taus:
            residual = tau - u_c @ (u_c.mT @ tau)
            ui, si, vhi = truncated_svd(residual, d)
            us.append(ui)
            ss.append(si)
            vhs.append(vhi)
    u_stack, s_all, v_stack = torch.cat(us, 1), torch.cat(ss), torch.cat(vhs, 0).mT
    orth = polar_factor if orthogonalizer == "polar" else newton_schulz
    return (orth(u_stack) * s_all.mean()) @ orth(v_stack).mT


@register
class IsoCTS(MatrixOrElementwiseMethod):
    """Iso-CTS (see module docstring)."""

    name = "iso_cts"
    label = "Iso-CTS"
    device_capable = True
    reference_url = "https://arxiv.org/abs/2502.04959"
    defaults = {"scaling": 1.0, "common_space_fraction": 0.8, "orthogonalizer": "polar", "non_matrix": "mean"}
    source = "Marczak et al. 2025, arXiv 2502.04959 (Iso-CTS); FusionBench iso_utils.iso_cts"
    grid = {"scaling": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]}
    grid_source = "Iso-CTS tunes alpha on validation data; range around FusionBench's 1.0 (project choice)"
    scale_param = "scaling"

    def validate(self) -> None:
        check_number(self, "scaling")
        check_number(self, "common_space_fraction", lo=0.0, hi=1.0)
        check_choice(self, "orthogonalizer", ORTHOGONALIZERS)
        check_choice(self, "non_matrix", NON_MATRIX_RULES)

    def merge_matrix(self, taus: list[torch.Tensor]) -> torch.Tensor:
        hp = self.hparams
        return float(hp["scaling"]) * iso_cts_matrix(taus, float(hp["common_space_fraction"]), hp["orthogonalizer"])

    def merge_elementwise(self, taus: list[torch.Tensor]) -> torch.Tensor:
        return float(self.hparams["scaling"]) * combine(taus, self.hparams["non_matrix"])
