"""The claims table of a report: each headline claim of the experiment's paper, tested on our
results, with its effect size, 95 % CI, p-value and a verdict.

A claim is a small declarative ``ClaimDef`` (each experiment kind lists its paper's in its
module, ``speechmerge.experiments``): which rows it compares (``Side``: by
method, model or label; the best of a group), on which quantity (``QUANTITIES``: normalised
performance, the mean error rate over the in-domain, out-of-domain, English or cross-domain test
sets, trainable parameters, rank allocations), how the effect is measured (difference in points
or relative to the second side, oriented so that a positive effect goes the claim's way) and
the kind of test. ``evaluate_claims`` resolves the claims of a report spec's kind against its
rows and evaluates them on a ``ResultStore``; a claim whose rows are not in the config is
"not run", with the reason.

Effects of scores are bootstrapped over test utterances: every test set is resampled with its
own seeded stream (``stats.stratum_seed``), the same utterance indices for every model, and the
corpus-level metrics and the quantity (mean, NP) are recomputed per replicate; the best of a
group is chosen again in every replicate. With several training seeds a row's value is the mean
over its seeds, and every replicate also draws the seeds with replacement (the same draw for
every row and test set, so rows are paired seed by seed: ``stats.seed_bootstrap_scores``). The
verdict rules are ``verdict``; how p-values are
computed is ``bootstrap_p``. docs/claims.md states every claim, its source and its margin.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from speechmerge.evaluation import metrics as M
from speechmerge.evaluation import stats as S
from speechmerge.evaluation.corpus_metrics import accuracy
from speechmerge.report.layouts import layout
from speechmerge.report.render import md_escape
from speechmerge.report.scores import ResultStore
from speechmerge.report.table import Column, Table, row_models, seed_rows

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


class _Context:
    """What evaluating a report's claims needs: the spec, the store, the base columns of the
    main table, bootstrap replicates of every (model, test set) cached per test set."""

    def __init__(
        self,
        spec: Mapping,
        store: ResultStore,
        n_boot: int,
        seed: int,
        params: Mapping[str, Mapping] | None,
        ranks: Mapping[str, Mapping[str, int]] | None,
    ):
        self.spec, self.store, self.n_boot, self.seed = spec, store, n_boot, seed
        self.params, self.ranks = params or {}, ranks or {}
        self.columns = layout(spec).main_columns(spec, store)
        self.table = Table(name="claims", title="", columns=self.columns, rows=[])
        base = [c for c in self.columns if c.kind == "base"]
        self.stratum = {c.testset: j for j, c in enumerate(base)}
        self._reps: dict[tuple[tuple, str, str], np.ndarray | None] = {}
        self.n_seeds = len(spec.get("seeds") or [0])

    # which base columns make up a quantity
    def quantity_columns(self, quantity: str) -> list[Column]:
        base = [c for c in self.columns if c.kind == "base"]
        spec = self.spec
        if quantity == "np":
            np_col = next((c for c in self.columns if c.kind == "np" and c.key == "np"), None)
            return self.table.parts(np_col) if np_col else []
        pick = {
            "id": lambda s: s in spec.get("subsets", []),
            "ood": lambda s: s in spec.get("ood_subsets", []),
            "en": lambda s: s in spec.get("retention_subsets", []) and M.base_language(s) == "en",
            "cross": lambda s: s in spec.get("peft_cross_subsets", []),
        }[quantity]
        return [c for c in base if pick(c.subset)]

    def bootstrap(self, needs: Mapping[tuple[str, str], Sequence[tuple]]) -> None:
        """Bootstrap every cell of ``needs`` ((test set, metric) -> cells, a cell = the models of
        its seeds) on its test set, all cells of a test set on the same resampled utterances
        (stream ``stratum_seed(seed, j)``, j the test set's position in the main table) and every
        test set with the same seed draws. Cells without hypotheses get None."""
        draws = S.seed_draws(self.n_seeds, self.n_boot, self.seed)
        for (testset, metric), cells in needs.items():
            cells = list(dict.fromkeys(cells))
            stats, ref_m, ref = [], None, None
            for cell in cells:
                if any((m, testset) not in self.store.hyps for m in cell):
                    self._reps[(cell, testset, metric)] = None
                    continue
                seeds = []
                for m in cell:
                    cs = S.corpus_stats(sorted(self.store.hyps[(m, testset)], key=lambda r: str(r["id"])), metric)
                    if ref is None:
                        ref_m, ref = m, cs
                    elif cs.ids != ref.ids:
                        S.check_paired(
                            self.store.hyps[(ref_m, testset)],
                            self.store.hyps[(m, testset)],
                            what_a=f"{ref_m}/{testset}",
                            what_b=f"{m}/{testset}",
                        )
                        raise S.HypothesesMismatch(f"{ref_m} and {m} on {testset}: utterance ids differ")
                    seeds.append(cs)
                stats.append((cell, seeds))
            if not stats:
                continue
            seed = S.stratum_seed(self.seed, self.stratum.get(testset, len(self.stratum)))
            scores = S.seed_bootstrap_scores([cs for _, cs in stats], n_boot=self.n_boot, seed=seed, draws=draws)
            for k, (cell, _) in enumerate(stats):
                self._reps[(cell, testset, metric)] = scores[:, k]

    def score(self, cell: tuple, c: Column) -> tuple[float, np.ndarray | None]:
        """(observed value from the score files, the mean over seeds; bootstrap replicates or
        None) of a cell (the models of its seeds)."""
        if not cell or None in cell:
            return math.nan, None
        values = [self.store.value(m, c.testset, c.metric) for m in cell]
        value = values[0] if len(values) == 1 else float(np.mean(values))
        return value, self._reps.get((cell, c.testset, c.metric))

    def utterances(self, cols: Sequence[Column], models: Sequence[str]) -> int | None:
        n = 0
        for c in cols:
            sizes = [len(self.store.hyps[(m, c.testset)]) for m in models if (m, c.testset) in self.store.hyps]
            if not sizes:
                return None
            n += max(sizes)
        return n


def _cell_models(row: Mapping, cols: Sequence[Column]) -> list[tuple]:
    """Per column, the models of the row's seeds (one model without seeds)."""
    return [tuple(row_models(row, c.subset, c.testset)) for c in cols]


def _quantity(ctx: _Context, row: Mapping, cols: Sequence[Column], quantity: str, ref: Mapping | None):
    """(observed, replicates or None) of a row's quantity: the mean of its cells or its NP."""
    vals, reps = [], []
    for c, m in zip(cols, _cell_models(row, cols)):
        v, r = ctx.score(m, c)
        vals.append(v)
        reps.append(r)
    if quantity != "np":
        obs = float(np.mean(vals)) if vals else math.nan
        rep = np.mean(np.stack(reps, axis=1), axis=1) if reps and all(r is not None for r in reps) else None
        return obs, rep
    ref_vals, ref_reps = [], []
    for c, m in zip(cols, _cell_models(ref, cols)):
        v, r = ctx.score(m, c)
        ref_vals.append(v)
        ref_reps.append(r)
    obs = _np(cols, np.asarray(vals, dtype=np.float64)[None, :], np.asarray(ref_vals, dtype=np.float64)[None, :])[0]
    have = all(r is not None for r in reps + ref_reps)
    rep = _np(cols, np.stack(reps, axis=1), np.stack(ref_reps, axis=1)) if have and reps else None
    return float(obs), rep


def _np(cols: Sequence[Column], row: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Normalised performance of [B, columns] scores against the reference's, as
    ``filling.np_value``: 100 × mean over columns of accuracy(row) / accuracy(ref), columns
    where the reference's accuracy is 0 skipped."""
    acc = np.vectorize(accuracy, otypes=[np.float64])
    metrics = np.asarray([c.metric for c in cols])
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.stack([acc(metrics[j], row[:, j]) for j in range(len(cols))], axis=1)
        r = np.stack([acc(metrics[j], ref[:, j]) for j in range(len(cols))], axis=1)
        ratio = np.where(r > 0, a / np.where(r > 0, r, 1.0), np.nan)
        kept = np.isfinite(ratio).sum(axis=1)
        out = 100.0 * np.where(kept > 0, np.nansum(ratio, axis=1) / np.maximum(kept, 1), np.nan)
    out[np.isnan(row).any(axis=1) | np.isnan(ref).any(axis=1)] = np.nan
    return out


def _side_value(ctx, rows, cols, quantity, ref, best: bool, higher: bool):
    """Observed value and replicates of a side: its one row, or the best of its rows."""
    per_row = [_quantity(ctx, r, cols, quantity, ref) for r in rows]
    obs = np.asarray([o for o, _ in per_row], dtype=np.float64)
    if not best or len(rows) == 1:
        return obs[0], per_row[0][1], rows[0]
    pick = np.nanargmax if higher else np.nanargmin
    chosen = rows[int(pick(obs))] if not np.isnan(obs).all() else rows[0]
    if any(r is None for _, r in per_row):
        return float(np.nanmax(obs) if higher else np.nanmin(obs)), None, chosen
    stack = np.stack([r for _, r in per_row], axis=1)
    rep = np.max(stack, axis=1) if higher else np.min(stack, axis=1)
    return float(np.nanmax(obs) if higher else np.nanmin(obs)), rep, chosen


def _effect(d: ClaimDef, a: float | np.ndarray, b: float | np.ndarray, higher: bool):
    sign = (1.0 if higher else -1.0) * (1.0 if d.direction == "better" else -1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = sign * (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
        if d.effect == "rel":
            bb = np.asarray(b, dtype=np.float64)
            return np.where(bb != 0, 100.0 * diff / np.where(bb != 0, bb, 1.0), np.nan)
        return diff


# ----- resolving and evaluating ----------------------------------------------------------------
def resolve(spec: Mapping, defs: Sequence[ClaimDef] | None = None) -> list[tuple[ClaimDef, str | None]]:
    """The claims of a spec's kind, ``each`` claims expanded to one per row of side B; with the
    reason each cannot run (None when its rows are there)."""
    out = []
    for d in claims_for(spec["kind"]) if defs is None else defs:
        missing = [s for s in (d.a, d.b) if s is not None and not s.rows(spec)]
        reason = f"no {' and no '.join(s.describe() for s in missing)} row in the config" if missing else None
        if not d.each or d.b is None or reason:
            if d.each:
                d = replace(d, id=f"{d.id}-other-merges", claim=d.claim.format(other="any other"))
            out.append((d, reason))
            continue
        for r in d.b.rows(spec):
            name = r.get("label", r["model"])
            side = Side(name, methods=(r["method"],)) if r.get("method") else Side(name, models=(r["model"],))
            rid = f"{d.id}-{r.get('method', r['model'])}"
            out.append((replace(d, id=rid, b=side, each=False, claim=d.claim.format(other=name)), None))
    return out


def evaluate_claims(
    spec: Mapping,
    store: ResultStore,
    *,
    n_boot: int | None = None,
    seed: int | None = None,
    params: Mapping[str, Mapping] | None = None,
    rank_allocations: Mapping[str, Mapping[str, int]] | None = None,
    defs: Sequence[ClaimDef] | None = None,
) -> list[ClaimResult]:
    """Every claim of the spec's kind evaluated on ``store`` (``params``: job -> trainable
    parameters, as ``writer.train_params``; ``rank_allocations``: job -> {module: rank})."""
    ctx = _Context(
        spec,
        store,
        store.n_boot if n_boot is None else n_boot,
        store.seed if seed is None else seed,
        params,
        rank_allocations,
    )
    claims = resolve(spec, defs)
    needs: dict[tuple[str, str], list[str]] = {}
    for d, reason in claims:
        if reason is None and d.quantity in SCORE_QUANTITIES:
            cols, rows = _score_rows(ctx, d)
            for c in cols:
                needs.setdefault((c.testset, c.metric), []).extend(
                    m for r in rows for m in _cell_models(r, [c]) if None not in m
                )
    ctx.bootstrap(needs)
    return [_evaluate(ctx, d, reason) for d, reason in claims]


SCORE_QUANTITIES = ("np", "id", "ood", "en", "cross")


def _score_rows(ctx: _Context, d: ClaimDef) -> tuple[list[Column], list[dict]]:
    """The base columns of a score claim and every row it reads (its sides and NP's reference)."""
    cols = ctx.quantity_columns(d.quantity)
    ref = layout(ctx.spec).reference(ctx.spec) if d.quantity == "np" else None
    return cols, d.a.rows(ctx.spec) + d.b.rows(ctx.spec) + ([ref] if ref else [])


def _result(ctx: _Context, d: ClaimDef) -> ClaimResult:
    metric = QUANTITIES[d.quantity]
    if "{metric}" in metric:
        cols = ctx.quantity_columns(d.quantity)
        names = sorted({c.metric for c in cols}) or ["error rate"]
        metric = metric.format(metric="/".join(n.upper() for n in names))
    if d.effect == "rel" and d.quantity not in ("params", "ranks"):
        metric += f", % of {d.b.name}"
    elif d.quantity not in ("params", "ranks"):
        metric += ", points"

    def name(side: Side) -> str:
        rows = side.rows(ctx.spec)
        return rows[0].get("label", rows[0]["model"]) if len(rows) == 1 and not side.best else side.describe()

    b = name(d.b) if d.b else ""
    return ClaimResult(
        id=d.id,
        paper=d.source.paper,
        arxiv=d.source.arxiv,
        claim=d.claim,
        comparison=f"{name(d.a)} vs {b}" if b else name(d.a),
        metric=metric,
        test=d.test,
        margin=d.margin,
        notes=[d.note],
    )


def _evaluate(ctx: _Context, d: ClaimDef, reason: str | None) -> ClaimResult:
    res = _result(ctx, d)
    if reason:
        res.notes.insert(0, reason)
        return res
    if d.quantity == "params":
        return _params_claim(ctx, d, res)
    if d.quantity == "ranks":
        return _ranks_claim(ctx, d, res)
    return _score_claim(ctx, d, res)


def _score_claim(ctx: _Context, d: ClaimDef, res: ClaimResult) -> ClaimResult:
    cols = ctx.quantity_columns(d.quantity)
    if not cols:
        res.notes.insert(0, f"no {d.quantity} test sets in the config")
        return res
    ref = None
    if d.quantity == "np":
        ref = layout(ctx.spec).reference(ctx.spec)
        if ref is None:
            res.notes.insert(0, "no reference row for NP (normalise_to)")
            return res
    higher = d.quantity == "np" or cols[0].higher_is_better
    rows_a, rows_b = d.a.rows(ctx.spec), d.b.rows(ctx.spec)
    everyone = _score_rows(ctx, d)[1]
    a_obs, a_rep, a_row = _side_value(ctx, rows_a, cols, d.quantity, ref, d.a.best, higher)
    b_obs, b_rep, b_row = _side_value(ctx, rows_b, cols, d.quantity, ref, d.b.best, higher)
    if d.a.best or d.b.best:
        res.comparison = f"{a_row.get('label', a_row['model'])} vs {b_row.get('label', b_row['model'])}"
        res.comparison += f" (best of {d.a.name} vs best of {d.b.name})"
    missing = [
        f"{m} on {c.testset}"
        for r in everyone
        for c, cell in zip(cols, _cell_models(r, cols))
        for m in cell
        if not m or math.isnan(ctx.store.value(m, c.testset, c.metric))
    ]
    if missing:
        res.notes.insert(0, "scores missing: " + ", ".join(missing[:4]) + (" …" if len(missing) > 4 else ""))
        return res
    res.effect = float(_effect(d, a_obs, b_obs, higher))
    res.n = ctx.utterances(cols, [m for r in everyone for cell in _cell_models(r, cols) for m in cell if m])
    res.n_unit = "utterances"
    if not math.isfinite(res.effect):
        res.verdict = "inconclusive"
        res.notes.insert(
            0,
            "NP undefined: the reference row's accuracy is 0 on every test set"
            if d.quantity == "np" and (math.isnan(a_obs) or math.isnan(b_obs))
            else f"effect undefined: {d.b.name} at 0",
        )
        return res
    if a_rep is None or b_rep is None:
        res.verdict = "inconclusive"
        res.notes.insert(0, "no hypotheses for a model: no CI")
        return res
    reps = _effect(d, a_rep, b_rep, higher)
    finite = reps[np.isfinite(reps)]
    if finite.size == 0:
        res.verdict = "inconclusive"
        res.notes.insert(0, "effect undefined in every bootstrap replicate")
        return res
    if finite.size < reps.size:
        res.notes.append(f"{reps.size - finite.size} of {reps.size} replicates undefined (dropped)")
    res.ci_lo, res.ci_hi = S.percentile_interval(finite)
    res.p_value = bootstrap_p(d.test, res.effect, finite, margin=d.margin)
    res.verdict = verdict(d.test, (res.ci_lo, res.ci_hi), margin=d.margin)
    res.notes.append(ONE_SEED if ctx.n_seeds <= 1 else SEEDS.format(n=ctx.n_seeds))
    return res


def _params_claim(ctx: _Context, d: ClaimDef, res: ClaimResult) -> ClaimResult:
    a, b = _first_seed_model(d.a.rows(ctx.spec)[0]), _first_seed_model(d.b.rows(ctx.spec)[0])
    pa, pb = ctx.params.get(a), ctx.params.get(b)
    if pa is None or pb is None:
        res.notes.insert(0, "no train_info for " + " and ".join(m for m, p in ((a, pa), (b, pb)) if p is None))
        return res
    if not pb["trainable_params"]:
        res.notes.insert(0, f"{b} has no trainable parameters")
        res.verdict = "inconclusive"
        return res
    res.effect = pa["trainable_params"] / pb["trainable_params"]
    res.n, res.n_unit = None, ""
    res.verdict = verdict("at_most", None, margin=d.margin, value=res.effect)
    res.notes.insert(
        0,
        f"{pa['trainable_params']:,} vs {pb['trainable_params']:,} trainable "
        f"({pa['trainable_percent']:.3g} % vs {pb['trainable_percent']:.3g} % of the model); no CI (counts)",
    )
    return res


def _ranks_claim(ctx: _Context, d: ClaimDef, res: ClaimResult) -> ClaimResult:
    a, b = _first_seed_model(d.a.rows(ctx.spec)[0]), _first_seed_model(d.b.rows(ctx.spec)[0])
    ra, rb = ctx.ranks.get(a), ctx.ranks.get(b)
    if not ra or not rb:
        res.notes.insert(0, "no rank allocation of " + " and ".join(m for m, r in ((a, ra), (b, rb)) if not r))
        return res
    x, y = aligned_ranks(ra, rb)
    out = spearman_test(x, y, n_boot=ctx.n_boot, seed=ctx.seed)
    res.effect, res.p_value = out["rho"], out["p_value"]
    res.ci_lo, res.ci_hi = out["ci"]
    res.n, res.n_unit = len(x), "modules"
    res.verdict = verdict(d.test, out["ci"])
    if out.get("note"):
        res.notes.insert(0, out["note"])
    return res


def _first_seed_model(row: Mapping) -> str:
    """The model of a row's first training seed (parameter counts and rank allocations are read
    from it: counts do not depend on the seed; allocations of one seed are compared)."""
    return seed_rows(row)[0]["model"]


# ----- rank correlation ------------------------------------------------------------------------
def aligned_ranks(a: Mapping[str, int], b: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """The ranks of the modules both allocations adapt, matched by (module type, layer) whatever
    the prefix of their names (peft's ``base_model.model.`` or none)."""
    from speechmerge.report.figures import rank_grid

    def cells(ranks):
        grid, labels, layers = rank_grid(ranks)
        return {
            (lab, layer): grid[i, j]
            for i, lab in enumerate(labels)
            for j, layer in enumerate(layers)
            if np.isfinite(grid[i, j])
        }

    ca, cb = cells(a), cells(b)
    keys = sorted(set(ca) & set(cb))
    return np.asarray([ca[k] for k in keys]), np.asarray([cb[k] for k in keys])


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ of every row pair of [B, n] arrays (average ranks for ties; NaN if constant)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def spearman_test(x: Sequence[float], y: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Spearman ρ of two paired vectors; two-sided permutation p-value (y permuted ``n_boot``
    times: (1 + #{|ρ*| ≥ |ρ|}) / (n_boot + 1)); percentile 95 % CI from resampling the pairs."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two vectors of the same length, got {x.shape} and {y.shape}")
    n = x.size
    out = {"rho": math.nan, "p_value": math.nan, "ci": (math.nan, math.nan), "n": n}
    if n < 3:
        return {**out, "note": f"{n} modules in common: too few for a rank correlation"}
    rho = float(_spearman_rows(x[None], y[None])[0])
    if math.isnan(rho):
        return {**out, "note": "one allocation gives every module the same rank: correlation undefined"}
    rng = np.random.default_rng(seed)
    perm = np.argsort(rng.random((n_boot, n)), axis=1)
    null = _spearman_rows(np.broadcast_to(x, (n_boot, n)), y[perm])
    null = null[np.isfinite(null)]
    p = (1.0 + float(np.sum(np.abs(null) >= abs(rho) - 1e-12))) / (null.size + 1.0)
    idx = rng.integers(0, n, size=(n_boot, n))
    boot = _spearman_rows(x[idx], y[idx])
    boot = boot[np.isfinite(boot)]
    ci = S.percentile_interval(boot) if boot.size else (math.nan, math.nan)
    return {**out, "rho": rho, "p_value": min(1.0, p), "ci": ci}


# ----- rendering -------------------------------------------------------------------------------
def to_csv(results: Sequence[ClaimResult]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n")
    w.writeheader()
    for r in results:
        w.writerow({k: ("" if v is None else v) for k, v in r.as_dict().items()})
    return buf.getvalue()


def _num(v: float, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    text = f"{v:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


def _p(v: float) -> str:
    if v is None or math.isnan(v):
        return "–"
    return f"{v:.3f}" if v >= 0.001 else "< 0.001"


def test_label(test: str, margin: float | None) -> str:
    """How a test reads in tables: "A > B", "non-inferior, margin 10", "≤ 0.1", ..."""
    m = f"{margin:g}" if margin is not None else "?"
    return {
        "superiority": "A > B",
        "noninferiority": f"non-inferior, margin {m}",
        "equivalence": f"equivalent, ±{m}",
        "threshold": f"> {m}",
        "at_most": f"≤ {m}",
        "correlation": "ρ > 0",
    }[test]


def _test_label(r: ClaimResult) -> str:
    return test_label(r.test, r.margin)


def to_markdown(results: Sequence[ClaimResult], title: str, *, n_boot: int, seed: int, seeds: int = 1) -> str:
    out = [
        f"**{md_escape(title)}**",
        "",
        "| Claim | Verdict | Effect | 95 % CI | p | n | Comparison | Metric | Test | Source | Note |",
        "|---|---|---:|---|---:|---:|---|---|---|---|---|",
    ]
    for r in results:  # the verdict right after the claim: what a reader looks for first
        ci = "–" if math.isnan(r.ci_lo) else f"[{_num(r.ci_lo)}, {_num(r.ci_hi)}]"
        n = "–" if r.n is None else f"{r.n} {r.n_unit}"
        cells = [
            md_escape(r.claim),
            f"**{r.verdict}**",
            md_escape(_num(r.effect, 3 if r.test == "at_most" else 2)),
            md_escape(ci),
            md_escape(_p(r.p_value)),
            md_escape(n),
            md_escape(r.comparison),
            md_escape(r.metric),
            md_escape(_test_label(r)),
            md_escape(f"{r.paper}, arXiv {r.arxiv}"),
            md_escape(r.note),
        ]
        out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "Effect: oriented so that a positive value goes the claim's way (A better than B; for "
        "'hurts', A worse). 95 % CI: percentile bootstrap over test utterances "
        f"({n_boot} resamples, seed {seed}; every test set resampled on its own, the same "
        "utterances for every model)"
        + (
            f"; scores are means over {seeds} training seeds and every resample also draws the seeds "
            "with replacement, the same draw for every model"
            if seeds > 1
            else ""
        )
        + ". Verdict from the CI: A > B reproduced if it lies above 0, "
        "contradicted if below; non-inferior with margin m reproduced if its lower end is above −m, "
        "contradicted if its upper end is below −m; equivalent within ±m reproduced if it lies "
        "inside (−m, m), contradicted if wholly outside; > t reproduced if its lower end is above t, "
        "contradicted if its upper end is below t; otherwise inconclusive. Claims, margins and "
        "p-values: docs/claims.md.",
    ]
    return "\n".join(out) + "\n"
