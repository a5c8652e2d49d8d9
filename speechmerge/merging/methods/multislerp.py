"""Multi-SLERP: barycentric interpolation on the hypersphere of the task vectors around the base
(mergekit ``multislerp.py`` with ``base_tensor``; C. Goddard, "Multislerp" blog post).

Per tensor, weights w_i (normalised to Σ w = 1 when ``normalize_weights``):
    n_i = ‖τ_i‖, u_i = τ_i / (n_i + eps);  M = Σ_i w_i u_i;  m = M / ‖M‖;
    t = Σ_i w_i (u_i − <u_i, m> m)           (tangent-space interpolation at m)
    r = m cos‖t‖' + t sin‖t‖' / ‖t‖',  ‖t‖' = ‖t‖ + eps    (exponential map back to the sphere)
    Δ = (Σ_i w_i n_i) · r.
(Analytically t = M − ‖M‖ m = 0, so r = m up to rounding: the result is the normalised weighted
mean direction at the weighted mean norm; the steps are kept as in the reference.)
Edge cases: N = 1 returns the expert (Δ = τ_1, as the reference); if ‖M‖ < eps (all task
vectors zero, or antipodal ones that cancel) Δ = Σ_i w_i τ_i, the linear fallback mergekit uses
for two experts (for more it raises; here a frozen tensor would stop the whole merge).
Streaming: everything is a combination of the τ_i, computed on N coefficients from the float64
Gram matrix <τ_i, τ_j>, then Δ = Σ_i a_i τ_i chunk by chunk.
Defaults (mergekit): ``weights`` None (uniform), ``normalize_weights`` True, ``eps`` 1e-8.
Every tensor is merged by this rule.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from speechmerge.merging.base import TensorContext, register
from speechmerge.merging.checks import check_bool, check_number, check_weights, expert_weights
from speechmerge.merging.streaming import StreamingMethod, TensorSource
from speechmerge.merging.tensor_ops import gram, weighted_sum


def multislerp_coefficients(G: torch.Tensor, w: list[float], eps: float) -> torch.Tensor | None:
    """Coefficients a (float64) with Δ = Σ a_i τ_i; None when ‖M‖ < eps (linear fallback)."""
    wt = torch.tensor(w, dtype=torch.float64, device=G.device)
    norms = G.diagonal().clamp(min=0).sqrt()
    inv = 1.0 / (norms + eps)

    def norm(c: torch.Tensor) -> float:
        return math.sqrt(max(float(c @ G @ c), 0.0))

    M = wt * inv  # coefficients of M = Σ w_i u_i over the τ basis
    mn = norm(M)
    if mn < eps:
        return None
    m = M / mn
    dots = inv * (G @ m)  # <u_i, m>
    t = M - float((wt * dots).sum()) * m
    tn = norm(t) + eps
    r = m * math.cos(tn) + t * (math.sin(tn) / tn)
    return r * float((norms * wt).sum())


@register
class MultiSlerp(StreamingMethod):
    """Multi-SLERP: barycentric spherical interpolation of the task vectors around the base."""

    name = "multislerp"
    label = "Multi-SLERP"
    reference_url = "https://github.com/arcee-ai/mergekit/blob/main/mergekit/merge_methods/multislerp.py"
    defaults = {"weights": None, "normalize_weights": True, "eps": 1e-8}
    source = "mergekit multislerp.py (base-relative, normalize_weights=true, eps=1e-8)"

    def validate(self) -> None:
        check_weights(self, "weights", nonnegative=True, positive_sum=True)
        check_bool(self, "normalize_weights")
        check_number(self, "eps", 0.0, None, lo_open=True)

    def merge_stream(self, src: TensorSource, ctx: TensorContext) -> Iterator[torch.Tensor]:
        if src.n == 1:
            for rows in src.chunks():
                yield src.delta(0, rows).clone()
            return
        w = expert_weights(self, src.n, normalize=bool(self.hparams["normalize_weights"]))
        G, _, _ = gram(src)
        a = multislerp_coefficients(G, w, float(self.hparams["eps"]))
        coefs = w if a is None else [float(x) for x in a]
        for rows in src.chunks():
            yield weighted_sum(src.deltas(rows), coefs)
