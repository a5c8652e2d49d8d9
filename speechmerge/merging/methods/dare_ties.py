"""DARE + TIES ("dare_ties"): DARE drop-and-rescale replaces TIES' magnitude trim, then sign
election and a disjoint (weighted) mean (Yu et al., ICML 2024; mergekit ``dare_ties`` =
``generalized_task_arithmetic`` with random sparsification and "sum" consensus).

    τ̃_i = DARE(τ_i) (see ``dare_linear``), u_i = w_i τ̃_i,
    γ = sign(Σ_i u_i) with γ = +1 where the sum is 0 (mergekit's ``>= 0``),
    Δ = λ · Σ_i u_i [sign u_i = γ] / Σ_i w_i [sign u_i = γ]   (0 where no expert agrees).

Defaults: ``drop_rate`` p = 0.9 (paper), ``rescale`` True, ``scaling`` λ = 1.0 (TIES' default,
which this merge step follows), ``weights`` None (all 1: a plain disjoint mean; must be > 0).
Deviation from mergekit: its ``dare_ties`` does not normalise by default (``normalize: false``),
i.e. it *sums* the agreeing entries; we divide by Σ_i w_i [sign u_i = γ], the disjoint mean of
TIES (mergekit's ``normalize: true``), so that DARE's drop is the only change from ``ties``.
Its rescale is also different: an L1-norm ratio, where the DARE paper, MergeLM, peft and
FusionBench use 1/(1 − p), as we do.
``matrices_only`` as in ``dare_linear``. Randomness as in ``dare_linear`` (one generator per
tensor, seeded from the run seed and the tensor name).
"""

from __future__ import annotations

from typing import Iterator

import torch

from speechmerge.merging.base import TensorContext, register
from speechmerge.merging.checks import check_weights, expert_weights
from speechmerge.merging.methods.dare_linear import DareMethod
from speechmerge.merging.streaming import TensorSource
from speechmerge.merging.tensor_ops import disjoint_sums, elect_sign


@register
class DareTies(DareMethod):
    """DARE + TIES: DARE_p(τ_i), sign election, weighted disjoint mean, times λ."""

    name = "dare_ties"
    label = "DARE-TIES"
    reference_url = "https://arxiv.org/abs/2311.03099"
    defaults = {"drop_rate": 0.9, "rescale": True, "scaling": 1.0, "weights": None, "matrices_only": False}
    source = "Yu et al. 2024 (DARE, p=0.9); mergekit dare_ties (sum consensus, weighted disjoint mean)"
    grid = {"drop_rate": [0.5, 0.7, 0.9], "scaling": [0.8, 1.0, 1.2, 1.4]}
    grid_source = "DARE's drop rates up to the paper's 0.9; lambda around TIES' 1.0 (project choice)"
    scale_param = "scaling"

    def validate(self) -> None:
        super().validate()
        check_weights(self, "weights", nonnegative=True, positive_sum=True)
        if self.hparams["weights"] is not None and min(self.hparams["weights"]) <= 0:
            raise ValueError(f"merge method {self.name!r}: hyperparameter 'weights' must be > 0")

    def merge_stream(self, src: TensorSource, ctx: TensorContext) -> Iterator[torch.Tensor]:
        lam = float(self.hparams["scaling"])
        w = expert_weights(self, src.n, normalize=False)
        for ds in self.dropped_chunks(src, ctx):
            us = [wi * d for wi, d in zip(w, ds)]
            sign = elect_sign(sum(us), 1.0)
            num, den = disjoint_sums(us, sign, w)
            yield lam * num / den
