"""TSV-M: Task Singular Vectors Merge (Gargiulo et al., CVPR 2025, arXiv 2412.00081; official
code AntoAndGar/task_singular_vectors ``src/utils/TSVM_utils.py``; FusionBench
``fusion_bench/method/task_singular_vector/utils/TSVM_utils.py::compute_and_sum_svd_mem_reduction``).

Matrix tensors (``ctx.is_matrix``), N task vectors τ_i of shape m×n, r = min(m, n):
    τ_i = U_i diag(σ_i) V_iᵀ (thin SVD); keep k = max(1, r // N) top triplets of each task
        (reference: int(r · 1/N), i.e. sv_reduction = 1/N; the same integer barring float
        rounding; the max(1, ·) guard only matters when N > r);
    U = [U_1[:, :k] … U_N[:, :k]] (m×Nk), S = diag(σ_1[:k] … σ_N[:k]), V = [V_1[:, :k] … V_N[:, :k]];
    U⊥ = polar(U), V⊥ = polar(V)  (nearest orthonormal-columns matrices, P Qᵀ from U = P Σ Qᵀ);
    Δ = α · U⊥ S V⊥ᵀ.
The reference pads U to m×r with zero columns before the polar factor; the zero columns only meet
zero singular values in S, so the result is the same. ``polar_factor`` drops numerically-zero
directions (unique partial isometry) where the reference keeps LAPACK's arbitrary completion:
identical for full-rank stacks, and well defined for identical task vectors (N identical τ give
Δ = α · rank-k truncation of τ).
Other tensors (biases, norms, embeddings, convolutions): Δ = α · mean_i τ_i (``non_matrix="mean"``,
the reference's rule for non-2-D tensors, followed by its global α) or α · Σ_i τ_i ("sum").
Scope: the reference code SVD-merges every 2-D tensor, the token embedding included; we SVD-merge
only the attention/MLP matrices and merge every other tensor by the non-matrix rule. Whisper's
token embedding is tied to the output projection (a vocabulary table, not a linear map whose
subspaces the method reasons about), and its SVD would need the whole 51865×d tensor of every
expert in memory, which the streaming engine avoids (docs/methods.md).

Defaults: α (``scaling``) = 1.0 (official code / FusionBench ``TaskSingularVectorMerging.yaml``).
``tsv_bases`` exposes (U⊥, S, V⊥); ``tsv_components`` the stacked, unorthogonalised factors.
TSV-M w/ NS (``tsv_m_ns``) and BoostedTSV-M (``boosted_tsv_m``) subclass this method.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from speechmerge.merging.base import register
from speechmerge.merging.checks import check_choice, check_number
from speechmerge.merging.linalg import boost_spectrum, polar_factor, svd
from speechmerge.merging.streaming import NON_MATRIX_RULES, MatrixOrElementwiseMethod, combine

BOOST_ENERGY = ("kept", "full")


def tsv_rank(r: int, n_tasks: int) -> int:
    """Directions kept per task: k = max(1, r // N)."""
    return max(1, r // n_tasks)


def tsv_components(
    deltas: Sequence[torch.Tensor],
    k: int | None = None,
    beta: float | None = None,
    energy: str = "kept",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stacked top-k task singular vectors: U (m×Nk), S (Nk), V (n×Nk), not orthogonalised.

    With ``beta`` each task's kept values are boosted (BoostedTSV-M): ``energy="kept"`` applies
    ``boost_spectrum`` to σ_i[:k] (energy over the kept part), ``"full"`` to the whole σ_i and then
    keeps [:k] (energy over the full spectrum).
    """
    r = min(deltas[0].shape)
    k = tsv_rank(r, len(deltas)) if k is None else min(int(k), r)
    us, ss, vs = [], [], []
    for tau in deltas:
        u, s, vh = svd(tau)
        if beta is None:
            s_k = s[:k]
        elif energy == "kept":
            s_k = boost_spectrum(s[:k], beta)
        elif energy == "full":
            s_k = boost_spectrum(s, beta)[:k]
        else:
            raise ValueError(f"unknown boosting energy {energy!r}; known: {BOOST_ENERGY}")
        us.append(u[:, :k])
        ss.append(s_k)
        vs.append(vh[:k, :].mT)
    return torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 1)


def tsv_bases(
    deltas: Sequence[torch.Tensor],
    orthogonalize: Callable[[torch.Tensor], torch.Tensor] = polar_factor,
    k: int | None = None,
    beta: float | None = None,
    energy: str = "kept",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U⊥, S, V⊥) with Δ = U⊥ diag(S) V⊥ᵀ (unscaled TSV-M of one matrix)."""
    u, s, v = tsv_components(deltas, k=k, beta=beta, energy=energy)
    return orthogonalize(u), s, orthogonalize(v)


def tsv_matrix(deltas: Sequence[torch.Tensor], **kwargs: Any) -> torch.Tensor:
    u, s, v = tsv_bases(deltas, **kwargs)
    return (u * s) @ v.mT


@register
class TSVM(MatrixOrElementwiseMethod):
    """TSV-M (see module docstring)."""

    name = "tsv_m"
    label = "TSV-M"
    device_capable = True
    reference_url = "https://arxiv.org/abs/2412.00081"
    defaults: dict[str, Any] = {"scaling": 1.0, "non_matrix": "mean"}
    source = "Gargiulo et al. 2025, arXiv 2412.00081 (TSV-M); AntoAndGar/task_singular_vectors TSVM_utils"
    grid = {"scaling": [0.6, 0.8, 1.0, 1.2, 1.4]}
    grid_source = "alpha around the official code's 1.0 (project choice; the paper does not tune it)"
    scale_param = "scaling"

    def validate(self) -> None:
        check_number(self, "scaling")
        check_choice(self, "non_matrix", NON_MATRIX_RULES)

    # Overridden by TSV-M w/ NS and BoostedTSV-M.
    def orthogonalize(self, m: torch.Tensor) -> torch.Tensor:
        return polar_factor(m)

    def boosting(self) -> dict[str, Any]:
        return {}

    def bases(self, deltas: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(U⊥, S, V⊥) of one matrix with this method's orthogonaliser and boosting."""
        return tsv_bases([d.float() for d in deltas], orthogonalize=self.orthogonalize, **self.boosting())

    def merge_matrix(self, taus: list[torch.Tensor]) -> torch.Tensor:
        u, s, v = self.bases(taus)
        return (u * (float(self.hparams["scaling"]) * s)) @ v.mT

    def merge_elementwise(self, taus: list[torch.Tensor]) -> torch.Tensor:
        return float(self.hparams["scaling"]) * combine(taus, self.hparams["non_matrix"])
