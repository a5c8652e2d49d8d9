"""LoRS-Merging: low-rank and sparse pruning of each task vector, then task arithmetic
(Zhao et al. 2025, arXiv 2502.17380; authors' scripts qmgzhao/LoRS-Merging
``model_merging/merge_fft-lors-merge.py`` and ``task_vectors.py``).

Matrix tensors (``ctx.is_matrix``: the 2-D weights of self/cross attention and MLP linears,
which is exactly what the authors' filter ``('attn.' in name or 'mlp.' in name) and 'weight' in
name`` selects in openai-whisper naming), for each task vector τ_i (m×n):
    L_i = best rank-r approximation of τ_i (truncated SVD),
          r = ``rank`` if given, else max(1, int(rank_fraction · min(m, n)));
          the authors hard-code r = int(768 · 0.01) = 7 for Whisper-small (d_model 768, and
          min(m, n) = 768 for every pruned matrix, fc1/fc2 included), so rank_fraction = 0.01 of
          min(m, n) is the same rule; Whisper-base (512) gets r = 5. Plain int() (floor), as theirs.
    R_i = τ_i − L_i;  S_i = R_i with all but its k = int(numel · keep_fraction) largest-|·| entries
          zeroed (torch.topk on |R_i| flattened: exactly k entries, ties broken by topk, as theirs);
    τ'_i = L_i + S_i (no rescaling); keep_fraction = 1 short-cuts to τ'_i = τ_i.
    Δ = λ · Σ_i τ'_i, λ = ``scaling`` (None -> 1/N; the authors use 0.2 with 5 experts).
Other tensors (biases, layer norms, embeddings, convolutions): Δ = λ · Σ_i τ_i, unpruned (the
authors' TaskVector sum scaled by the same coefficient).

Halves: ``lors_lowrank`` (τ'_i = L_i, authors' ``merge_fft-svp-merge.py``) and ``lors_sparse``
(τ'_i = top-k |τ_i| of τ_i itself, not of a residual; ``merge_fft-mp-merge.py``), one module each,
share ``_PrunedTaskArithmetic`` below.
Defaults: rank_fraction 0.01, rank None, keep_fraction 0.2, scaling None (= 1/N).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from speechmerge.merging.base import register
from speechmerge.merging.checks import check_number
from speechmerge.merging.linalg import lowrank_sparse_split
from speechmerge.merging.streaming import MatrixOrElementwiseMethod


def lors_rank(shape: Sequence[int], rank_fraction: float, rank: int | None = None) -> int:
    """r = rank if given else max(1, int(rank_fraction · min(shape))), capped at min(shape)."""
    r_max = min(shape)
    r = int(rank) if rank is not None else max(1, int(rank_fraction * r_max))
    return min(r, r_max)


class _PrunedTaskArithmetic(MatrixOrElementwiseMethod):
    """Δ = λ Σ_i prune(τ_i) on matrices, λ Σ_i τ_i elsewhere; λ = scaling or 1/N."""

    def validate(self) -> None:
        check_number(self, "scaling", allow_none=True)
        if "rank_fraction" in self.hparams:
            check_number(self, "rank_fraction", lo=0.0, hi=1.0, lo_open=True)
            check_number(self, "rank", lo=0, integer=True, allow_none=True)
        if "keep_fraction" in self.hparams:
            check_number(self, "keep_fraction", lo=0.0, hi=1.0)

    def rank_for(self, shape: Sequence[int]) -> int:
        rank = self.hparams.get("rank")
        return lors_rank(shape, float(self.hparams["rank_fraction"]), None if rank is None else int(rank))

    def prune(self, tau: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scaling(self, n_tasks: int) -> float:
        scaling = self.hparams["scaling"]
        return 1.0 / n_tasks if scaling is None else float(scaling)

    def resolved_hparams(self, n_tasks: int) -> dict[str, Any]:
        return {**self.hparams, "scaling": self.scaling(n_tasks)}

    def merge_matrix(self, taus: list[torch.Tensor]) -> torch.Tensor:
        acc = torch.zeros_like(taus[0])
        for tau in taus:
            acc += self.prune(tau)
        return self.scaling(len(taus)) * acc

    def merge_elementwise(self, taus: list[torch.Tensor]) -> torch.Tensor:
        acc = taus[0].clone()
        for tau in taus[1:]:
            acc += tau
        return self.scaling(len(taus)) * acc


@register
class LoRS(_PrunedTaskArithmetic):
    """LoRS-Merging (see module docstring)."""

    name = "lors"
    label = "LoRS-Merging"
    device_capable = True
    reference_url = "https://arxiv.org/abs/2502.17380"
    defaults: dict[str, Any] = {"scaling": None, "rank_fraction": 0.01, "rank": None, "keep_fraction": 0.2}
    source = "Zhao et al. 2025, arXiv 2502.17380 (LoRS-Merging); qmgzhao/LoRS-Merging merge_fft-lors-merge.py"
    grid = {"scaling": [0.1, 0.2, 0.3, 0.4, 0.5]}
    grid_source = "LoRS-Merging's authors use 0.2 with 5 experts; range around it (project choice)"
    scale_param = "scaling"

    def prune(self, tau: torch.Tensor) -> torch.Tensor:
        keep = float(self.hparams["keep_fraction"])
        if keep >= 1.0:
            return tau
        low, sparse = lowrank_sparse_split(tau, self.rank_for(tau.shape), keep)
        return low + sparse
