"""Karcher mean: the Riemannian (Fréchet) mean on the unit sphere of the experts' weight
tensors, with the norm restored (mergekit ``karcher.py``, ``karcher_merge_tensors``).

Per tensor, θ_i = θ_0 + τ_i, weights α_i (uniform by default, normalised):
    u_i = θ_i / ‖θ_i‖ (experts with ‖θ_i‖ ≤ tol are left out of the direction, their α renormalised);
    m ← normalise(Σ α_i u_i)  (u of the first valid expert if that sum is ~0);
    repeat ``max_iter`` times:  φ_i = arccos(<m, u_i>),
        v = Σ_{φ_i ≥ tol} α_i (φ_i / sin φ_i) (u_i − <m, u_i> m)      (log map, weighted)
        stop if ‖v‖ < tol;  m ← normalise(cos‖v‖ m + sin‖v‖ v/‖v‖)    (exp map)
    θ = (Σ_i α_i ‖θ_i‖) · m,   Δ = θ − θ_0.
N = 1 returns the expert (Δ = τ_1); if every ‖θ_i‖ ≤ tol the result is 0.

Streaming: every vector in the iteration stays in the span of the u_i, so the iteration runs
exactly on N coefficients given the float64 Gram matrix <θ_i, θ_j> (accumulated over chunks as
<θ_0,θ_0> + <θ_0,τ_i> + <θ_0,τ_j> + <τ_i,τ_j>, which keeps the small angles between experts
accurate); then Δ = (Σ_i a_i − 1) θ_0 + Σ_i a_i τ_i chunk by chunk, with θ = Σ_i a_i θ_i.
Defaults (mergekit): ``max_iter`` 10, ``tol`` 1e-5, ``weights`` None (uniform). Every tensor
is merged by this rule.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from speechmerge.merging.base import TensorContext, register
from speechmerge.merging.checks import check_number, check_weights, expert_weights
from speechmerge.merging.streaming import StreamingMethod, TensorSource
from speechmerge.merging.tensor_ops import gram


def karcher_coefficients(G: torch.Tensor, alphas: list[float], max_iter: int, tol: float) -> torch.Tensor:
    """Coefficients a (float64, N) with Karcher mean = Σ_i a_i θ_i, from the Gram matrix of θ."""
    n = G.shape[0]
    norms = G.diagonal().clamp(min=0).sqrt()
    valid = [i for i in range(n) if float(norms[i]) > tol]
    if not valid:
        return torch.zeros(n, dtype=torch.float64, device=G.device)
    idx = torch.tensor(valid, device=G.device)
    nv = norms[idx]
    C = G[idx][:, idx] / (nv[:, None] * nv[None, :])  # cosines between valid unit vectors
    av = torch.tensor([alphas[i] for i in valid], dtype=torch.float64, device=G.device)
    av = av / av.sum()

    def norm(c: torch.Tensor) -> float:
        return math.sqrt(max(float(c @ C @ c), 0.0))

    c = av.clone()
    mn = norm(c)
    if mn < tol:
        c = torch.zeros_like(av)
        c[0] = 1.0
    else:
        c = c / mn
    for _ in range(int(max_iter)):
        dots = (C @ c).clamp(-1.0, 1.0)
        phis = torch.arccos(dots)
        v = torch.zeros_like(c)
        for k in range(len(valid)):
            phi = float(phis[k])
            if phi < tol:
                continue
            step = float(av[k]) * phi / math.sin(phi)
            v[k] += step
            v -= step * float(dots[k]) * c
        vn = norm(v)
        if vn < tol:
            break
        c = math.cos(vn) * c + math.sin(vn) * (v / vn)
        un = norm(c)
        if un > tol:
            c = c / un
    scale = sum(a * float(nm) for a, nm in zip(alphas, norms))
    out = torch.zeros(n, dtype=torch.float64, device=G.device)
    out[idx] = scale * c / nv
    return out


@register
class Karcher(StreamingMethod):
    """Karcher mean of the experts' weights on the unit sphere, mean norm restored."""

    name = "karcher"
    label = "Karcher mean"
    reference_url = "https://github.com/arcee-ai/mergekit/blob/main/mergekit/merge_methods/karcher.py"
    defaults = {"max_iter": 10, "tol": 1e-5, "weights": None}
    source = "mergekit karcher.py (max_iter=10, tol=1e-5, uniform weights)"

    def validate(self) -> None:
        check_number(self, "max_iter", 0, None, integer=True)
        check_number(self, "tol", 0.0, None, lo_open=True)
        check_weights(self, "weights", nonnegative=True, positive_sum=True)

    def merge_stream(self, src: TensorSource, ctx: TensorContext) -> Iterator[torch.Tensor]:
        if src.n == 1:
            for rows in src.chunks():
                yield src.delta(0, rows).clone()
            return
        alphas = expert_weights(self, src.n, normalize=True)
        G, bb, bt = gram(src, with_base=True)
        G_theta = G + bt[:, None] + bt[None, :] + bb
        a = karcher_coefficients(G_theta, alphas, int(self.hparams["max_iter"]), float(self.hparams["tol"]))
        base_coef = float(a.sum()) - 1.0
        weights = [float(x) for x in a]
        for rows in src.chunks():
            out = src.base(rows) * base_coef
            for w, d in zip(weights, src.deltas(rows)):
                out.add_(d, alpha=w)
            yield out
