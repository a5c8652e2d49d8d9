"""BoostedTSV-M: TSV-M w/ NS whose per-task kept spectra are boosted before concatenation
(Carvalho et al. 2026, arXiv 2603.05354, "mitigates rank collapse via singular-value boosting and
improves numerical stability"; the paper's code is not public: the formula below is a
reconstruction; docs/methods.md, "BoostedTSV-M", gives its sources).

Matrix tensors, N task vectors τ_i = U_i diag(σ_i) V_iᵀ, r = min(m, n), k = max(1, r // N):
    boosting (``linalg.boost_spectrum``), per task, on its kept spectrum σ = σ_i[:k]
    (``energy="kept"``, default):
        E_j = Σ_{l<=j} σ_l² / Σ_{l<k} σ_l²,   j* = min{j : E_j >= β},   σ_l ← max(σ_l, σ_{j*}),
    i.e. the kept directions after j* are raised to σ_{j*}; the top ones are unchanged.
    Then exactly TSV-M w/ NS (``tsv_m_ns``): stack U, boosted S, V; U⊥ = NS(U), V⊥ = NS(V)
    (5 Muon quintic steps); Δ = α · U⊥ S V⊥ᵀ.
Why the kept part: the boosted values are the ones that enter the merge, so β is the fraction
of the *merged* energy of a task that stays on top, with the same meaning for any N (k = r // N
shrinks as N grows; with energy over the full spectrum, a task whose top-k holds less than β of
its energy would never be boosted). ``energy="full"`` computes E_j over the whole σ_i instead and
then keeps [:k] (same function applied before truncation).
β = 1: j* is the last index, σ_{j*} is the smallest kept value, nothing changes: the output is
bit-for-bit that of ``tsv_m_ns`` (``boost_spectrum`` returns its input for β = 1). Smaller β
flattens more (β → 0: every kept value becomes σ_1, a flat spectrum like Iso-C's).
Other tensors: as TSV-M: Δ = α · mean_i τ_i (``non_matrix="mean"``) or α · Σ_i τ_i ("sum");
the SVD merge is restricted to attention/MLP matrices, as in ``tsv_m`` (docs/methods.md).

Defaults: β = 0.3 (best value of the paper's 0.1–1.0 sweep), energy "kept", α = 1.0,
ns_steps = 5, Muon coefficients.
"""

from __future__ import annotations

from typing import Any

from speechmerge.merging.base import register
from speechmerge.merging.checks import check_choice, check_number
from speechmerge.merging.linalg import boost_spectrum  # noqa: F401  (re-exported for figures)
from speechmerge.merging.methods.tsv_m import BOOST_ENERGY
from speechmerge.merging.methods.tsv_m_ns import TSVMNewtonSchulz


@register
class BoostedTSVM(TSVMNewtonSchulz):
    """BoostedTSV-M (see module docstring)."""

    name = "boosted_tsv_m"
    label = "BoostedTSV-M"
    device_capable = True
    reference_url = "https://arxiv.org/abs/2603.05354"
    defaults: dict[str, Any] = {**TSVMNewtonSchulz.defaults, "beta": 0.3, "energy": "kept"}
    source = "Carvalho et al. 2026, arXiv 2603.05354 (BoostedTSV-M; boosting rule reconstructed)"
    grid = {"beta": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]}
    grid_source = "the BoostedTSV-M paper's beta sweep 0.1-1.0"
    scale_param = "scaling"

    def validate(self) -> None:
        super().validate()
        check_number(self, "beta", lo=0.0, hi=1.0, lo_open=True)
        check_choice(self, "energy", BOOST_ENERGY)

    def boosting(self) -> dict[str, Any]:
        return {"beta": float(self.hparams["beta"]), "energy": self.hparams["energy"]}
