"""DARE + task arithmetic ("dare_linear"): Drop And REscale each task vector, then add them
(Yu et al., ICML 2024, "Language Models are Super Mario"; official code yule-BUAA/MergeLM;
mergekit ``dare_linear``; FusionBench ``dare/task_arithmetic``).

    τ̃_i = τ_i ⊙ m_i / (1 − p),  m_i ~ Bernoulli(1 − p) per entry (``rescale`` = True),
    Δ = λ · Σ_i w_i τ̃_i.

Randomness: one generator per tensor from ``ctx.generator()`` (seed and tensor name), drawn
chunk by chunk and expert by expert, so a run is reproducible and independent of tensor order.
Defaults: ``drop_rate`` p = 0.9 (the paper's headline setting, "drop 90 % of the delta
parameters"; FusionBench uses 0.5, mergekit takes density = 1 − p), ``rescale`` True,
``scaling`` λ = 0.3 (the project's task-arithmetic default, so that DARE is the only change),
``weights`` None (all 1; any real numbers allowed). ``matrices_only`` = False drops entries of
every tensor (FusionBench ``only_on_linear_weights: false``); True drops only in attention/MLP
matrices and adds the other tensors undropped.
"""

from __future__ import annotations

from typing import Iterator

import torch

from speechmerge.merging.base import TensorContext, register
from speechmerge.merging.checks import check_bool, check_number, check_weights, expert_weights
from speechmerge.merging.streaming import StreamingMethod, TensorSource
from speechmerge.merging.tensor_ops import dare_drop, weighted_sum


class DareMethod(StreamingMethod):
    """Shared hyperparameters of the DARE variants and the drop step."""

    def validate(self) -> None:
        check_number(self, "drop_rate", 0.0, 1.0, hi_open=True)
        check_number(self, "scaling")
        check_bool(self, "rescale")
        check_bool(self, "matrices_only")

    def dropped_chunks(self, src: TensorSource, ctx: TensorContext) -> Iterator[list[torch.Tensor]]:
        """For each chunk of ``src``: the N task-vector chunks after DARE (or as is)."""
        p = float(self.hparams["drop_rate"]) if self.sparsify_here(ctx) else 0.0
        gen = ctx.generator()
        for rows in src.chunks():
            yield [dare_drop(d, p, bool(self.hparams["rescale"]), gen) for d in src.deltas(rows)]


@register
class DareLinear(DareMethod):
    """DARE + task arithmetic: Δ = λ Σ_i w_i DARE_p(τ_i)."""

    name = "dare_linear"
    label = "DARE (linear)"
    reference_url = "https://arxiv.org/abs/2311.03099"
    defaults = {"drop_rate": 0.9, "rescale": True, "scaling": 0.3, "weights": None, "matrices_only": False}
    source = "Yu et al. 2024 (DARE, p=0.9) + task arithmetic (lambda=0.3, project default)"
    grid = {"drop_rate": [0.5, 0.7, 0.9], "scaling": [0.1, 0.3, 0.5, 0.7, 1.0]}
    grid_source = "DARE's drop rates up to the paper's 0.9; lambda over task arithmetic's [0, 1] (project choice)"
    scale_param = "scaling"

    def validate(self) -> None:
        super().validate()
        check_weights(self, "weights", nonnegative=False, positive_sum=False)

    def merge_stream(self, src: TensorSource, ctx: TensorContext) -> Iterator[torch.Tensor]:
        lam = float(self.hparams["scaling"])
        w = [lam * x for x in expert_weights(self, src.n, normalize=False)]
        for ds in self.dropped_chunks(src, ctx):
            yield weighted_sum(ds, w)
