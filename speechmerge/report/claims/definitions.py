"""What a claim is (``ClaimDef``: which rows, which quantity, which effect, which test), its
result (``ClaimResult``) and the verdict rules (``verdict``, ``bootstrap_p``). The claims
themselves are in each experiment kind's module (``speechmerge.experiments``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

VERDICTS = ("reproduced", "contradicted", "inconclusive", "not run")
TESTS = ("superiority", "noninferiority", "equivalence", "threshold", "at_most", "correlation")
ONE_SEED = "one training run per model: the CI covers test-sample variance only"
SEEDS = "mean over {n} training seeds: the CI covers seed and test-sample variance"


# ----- verdict rules ---------------------------------------------------------------------------
def verdict(test: str, ci: Sequence[float] | None, *, margin: float | None = None, value: float | None = None) -> str:
    """The verdict of a claim from the 95 % CI of its effect (oriented: positive = the claim's way).

    * superiority, correlation: reproduced if the CI lies above 0, contradicted if below 0;
    * noninferiority (margin m): reproduced if CI lower > −m, contradicted if CI upper < −m;
    * equivalence (margin m): reproduced if the CI lies inside (−m, m), contradicted if it lies
      wholly outside it (at or beyond one bound), else inconclusive;
    * threshold (margin t): reproduced if CI lower > t, contradicted if CI upper < t;
    * at_most (margin t, no CI): a deterministic ``value``; reproduced if value ≤ t, else
      contradicted.
    Otherwise inconclusive; a CI that is missing or not finite is inconclusive too.
    """
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; known: {TESTS}")
    if test == "at_most":
        if margin is None or value is None or math.isnan(value):
            return "inconclusive"
        return "reproduced" if value <= margin else "contradicted"
    if ci is None or not all(math.isfinite(x) for x in ci):
        return "inconclusive"
    lo, hi = ci
    if test in ("superiority", "correlation"):
        bound = 0.0
    elif margin is None:
        raise ValueError(f"test {test!r} needs a margin")
    elif test == "noninferiority":
        bound = -margin
    elif test == "threshold":
        bound = margin
    else:  # equivalence
        if -margin < lo and hi < margin:
            return "reproduced"
        if hi <= -margin or lo >= margin:
            return "contradicted"
        return "inconclusive"
    if lo > bound:
        return "reproduced"
    if hi < bound:
        return "contradicted"
    return "inconclusive"


def bootstrap_p(test: str, observed: float, replicates: np.ndarray, *, margin: float | None = None) -> float:
    """p-value of the null hypothesis of a test from bootstrap replicates of the effect, the
    replicates shifted to the null (as in ``stats.paired_bootstrap_mean``):

    * superiority, correlation: two-sided, H0 effect = 0;
    * noninferiority: one-sided, H0 effect ≤ −m;  threshold: one-sided, H0 effect ≤ t;
    * equivalence: two one-sided tests (TOST), H0 effect ≤ −m or effect ≥ m: the larger p.
    """
    d = np.asarray(replicates, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0 or not math.isfinite(observed):
        return math.nan
    centred = d - d.mean()
    b = d.size

    def p_of(count) -> float:
        return min(1.0, (1.0 + float(count)) / (b + 1.0))

    tol = 1e-12
    if test in ("superiority", "correlation"):
        return p_of(np.sum(np.abs(centred) >= abs(observed) - tol))
    if test == "noninferiority":
        return p_of(np.sum(centred >= observed + margin - tol))
    if test == "threshold":
        return p_of(np.sum(centred >= observed - margin - tol))
    if test == "equivalence":
        low = p_of(np.sum(centred >= observed + margin - tol))
        high = p_of(np.sum(centred <= observed - margin + tol))
        return max(low, high)
    raise ValueError(f"test {test!r} has no bootstrap p-value")


# ----- claim definitions -----------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    paper: str
    arxiv: str


@dataclass(frozen=True)
class Side:
    """The rows one side of a comparison takes: rows whose method, model or label is listed
    (``group="merge"`` rows only, with ``merges``); ``best``: the best of them."""

    name: str
    methods: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    merges: bool = False  # every merge row except ``methods`` (then ``methods`` = excluded)
    best: bool = False
    first: bool = False  # only the first of ``models`` (in that order) that the report has

    def rows(self, spec: Mapping) -> list[dict]:
        if self.first:
            present = {r["model"]: r for r in spec["rows"]}
            return next(([present[m]] for m in self.models if m in present), [])
        if self.merges:
            return [r for r in spec["rows"] if r.get("group") == "merge" and r.get("method") not in self.methods]
        return [
            r
            for r in spec["rows"]
            if r.get("method") in self.methods or r["model"] in self.models or r.get("label") in self.labels
        ]

    def describe(self) -> str:
        what = [*self.methods, *self.models, *self.labels]
        if self.merges:
            return "merge rows other than " + ", ".join(self.methods)
        return ("the best of " if self.best else "") + " / ".join(what)


@dataclass(frozen=True)
class ClaimDef:
    """One headline claim. ``effect``: "diff" (A − B in the quantity's units, oriented) or "rel"
    (100 × oriented (A − B) / B, % of B); ``direction``: "better" (the claim: A better than B)
    or "worse"; ``each``: one claim per row of side B (ids get the row's method)."""

    id: str
    kind: str
    source: Source
    claim: str
    a: Side
    b: Side | None
    quantity: str
    test: str
    effect: str = "diff"
    margin: float | None = None
    direction: str = "better"
    each: bool = False
    note: str = ""
    # what docs/claims.md shows (``speechmerge.report.claims_doc``): the id and claim as
    # documented where they differ (one claim per method), the rows compared and the effect
    doc_id: str = ""
    doc_claim: str = ""
    doc_comparison: str = ""
    doc_effect: str = ""


QUANTITIES = {
    "np": "NP All (experts = 100)",
    "id": "in-domain mean {metric}",
    "ood": "out-of-domain mean {metric}",
    "en": "English retention {metric}",
    "cross": "cross-domain mean {metric}",
    "params": "trainable parameters, ratio A / B",
    "ranks": "Spearman ρ of per-module ranks",
}


def claims_for(kind: str) -> list[ClaimDef]:
    """The claims of an experiment kind (its module's ``claims``)."""
    from speechmerge.experiments import get_kind

    return list(get_kind(kind).claims)


# ----- results ---------------------------------------------------------------------------------
@dataclass
class ClaimResult:
    id: str
    paper: str
    arxiv: str
    claim: str
    comparison: str
    metric: str
    test: str
    margin: float | None = None
    effect: float = math.nan
    ci_lo: float = math.nan
    ci_hi: float = math.nan
    p_value: float = math.nan
    n: int | None = None
    n_unit: str = ""
    verdict: str = "not run"
    notes: list[str] = field(default_factory=list)

    @property
    def note(self) -> str:
        return "; ".join(n for n in self.notes if n)

    def as_dict(self) -> dict:
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.id}: verdict {self.verdict!r} is not one of {VERDICTS}")
        d = {k: getattr(self, k) for k in CSV_FIELDS if k != "note"}
        d["note"] = self.note
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


CSV_FIELDS = (
    "id",
    "paper",
    "arxiv",
    "claim",
    "comparison",
    "metric",
    "test",
    "margin",
    "effect",
    "ci_lo",
    "ci_hi",
    "p_value",
    "n",
    "n_unit",
    "verdict",
    "note",
)
