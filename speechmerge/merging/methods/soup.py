"""SOUP: weighted average of the experts' weights (Wortsman et al., ICML 2022, "Model soups",
uniform soup; mergekit ``linear.py`` with ``normalize: true``).

    θ = Σ_i w_i θ_i,  w_i ≥ 0 normalised to Σ_i w_i = 1   ⇔   Δ = Σ_i w_i τ_i.

Defaults: ``weights`` = None (uniform, w_i = 1/N: the uniform soup of the paper; mergekit needs
explicit weights and normalises them). Every tensor (matrices, biases, norms, embeddings) is
averaged the same way.
"""

from __future__ import annotations

from typing import Iterator

import torch

from speechmerge.merging.base import TensorContext, register
from speechmerge.merging.checks import check_weights, expert_weights
from speechmerge.merging.streaming import StreamingMethod, TensorSource
from speechmerge.merging.tensor_ops import weighted_sum


@register
class Soup(StreamingMethod):
    """SOUP: Δ = Σ_i w_i τ_i with weights normalised to 1 (uniform soup by default)."""

    name = "soup"
    label = "SOUP"
    reference_url = "https://arxiv.org/abs/2203.05482"
    defaults = {"weights": None}
    source = "Wortsman et al. 2022 (uniform model soup); mergekit linear.py (normalize=true)"

    def validate(self) -> None:
        check_weights(self, "weights", nonnegative=True, positive_sum=True)

    def merge_stream(self, src: TensorSource, ctx: TensorContext) -> Iterator[torch.Tensor]:
        w = expert_weights(self, src.n, normalize=True)
        for rows in src.chunks():
            yield weighted_sum(src.deltas(rows), w)
