"""TIES-Merging: trim, elect sign, disjoint merge (Yadav et al., NeurIPS 2023; official code
prateeky2806/ties-merging ``merge_utils.py``: ``topk_values_mask``, ``resolve_sign("mass")``,
``disjoint_merge("dis-mean")``; FusionBench ``ties_merging``; mergekit ``ties``).

Per tensor, N task vectors τ_i:
  1. Trim:  τ̂_i = τ_i ⊙ [|τ_i| ≥ t_i], t_i = the k-th largest |τ_i|, k = int(numel · keep_fraction)
     (ties at t_i are kept, as the reference's ``>= kthvalue``; k = 0 keeps nothing).
  2. Elect: γ = sign(Σ_i τ̂_i) ("mass"); entries whose sum is exactly 0 get the tensor's majority
     sign sign(Σ_entries γ) (+1 if that is 0 too), the reference's ``resolve_zero_signs("majority")``.
  3. Disjoint mean: Δ = λ · Σ_i τ̂_i [sign τ̂_i = γ] / max(1, #{i : sign τ̂_i = γ}) per entry.
Every non-zero entry of Δ has the elected sign γ (for λ > 0).

Defaults: ``keep_fraction`` 0.2 and ``scaling`` λ = 1.0 (the paper's values when no validation
set is used: top-20 % and λ = 1). ``matrices_only`` = False trims every tensor, as the
reference (which flattens the whole model); True trims only attention/MLP matrices and merges
other tensors by election + disjoint mean without trimming.
Deviations from the official code: the threshold is per tensor (the reference takes one
top-k over the whole flattened model; mergekit is per tensor too, and a global threshold would
need the whole model in memory), and exactly k entries are kept (``kthvalue(d - k)`` in the
reference keeps k + 1).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from speechmerge.merging.base import TensorContext, register
from speechmerge.merging.checks import check_bool, check_number
from speechmerge.merging.streaming import StreamingMethod, TensorSource
from speechmerge.merging.tensor_ops import disjoint_sums, elect_sign, magnitude_threshold


def trim(t: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """τ ⊙ [|τ| ≥ threshold] as a new tensor (the input itself when threshold is None)."""
    if threshold is None:
        return t
    if math.isinf(threshold):
        return torch.zeros_like(t)
    return torch.where(t.abs() >= threshold, t, 0.0)


@register
class Ties(StreamingMethod):
    """TIES: keep the top-k |τ_i|, elect signs by mass, disjoint mean, times λ."""

    name = "ties"
    label = "TIES"
    reference_url = "https://arxiv.org/abs/2306.01708"
    defaults = {"keep_fraction": 0.2, "scaling": 1.0, "matrices_only": False}
    source = "Yadav et al. 2023 (TIES; k=20%, lambda=1 without validation); prateeky2806/ties-merging"
    grid = {"keep_fraction": [0.1, 0.2, 0.3], "scaling": [0.8, 1.0, 1.2, 1.4, 1.6, 1.8]}
    grid_source = (
        "the TIES paper tunes k and lambda on validation data; values around its k=20 %, lambda=1 (project choice)"
    )
    scale_param = "scaling"

    def validate(self) -> None:
        check_number(self, "keep_fraction", 0.0, 1.0, lo_open=True)
        check_number(self, "scaling")
        check_bool(self, "matrices_only")

    def merge_stream(self, src: TensorSource, ctx: TensorContext) -> Iterator[torch.Tensor]:
        lam = float(self.hparams["scaling"])
        kf = float(self.hparams["keep_fraction"]) if self.sparsify_here(ctx) else 1.0
        thresholds = [magnitude_threshold(src, i, kf) for i in range(src.n)]

        def trimmed(rows: slice | None) -> list[torch.Tensor]:
            return [trim(d, t) for d, t in zip(src.deltas(rows), thresholds)]

        zero_sign: float | None = None  # the tensor's majority sign, computed only if needed

        def majority_sign() -> float:
            total = 0.0
            for rows in src.chunks():
                total += float(torch.sign(sum(trimmed(rows))).sum(dtype=torch.float64))
            return -1.0 if total < 0 else 1.0

        for rows in src.chunks():
            ts = trimmed(rows)
            total = sum(ts)
            undecided = total == 0
            if zero_sign is None and bool((undecided & torch.stack([t != 0 for t in ts]).any(0)).any()):
                zero_sign = majority_sign()
            sign = elect_sign(total, 1.0 if zero_sign is None else zero_sign)
            num, count = disjoint_sums(ts, sign)
            yield lam * num.div_(count)
