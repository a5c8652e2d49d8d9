"""Evaluating a report's claims on its results: resolve each claim's rows, compute the effect,
bootstrap it over test utterances (and seeds), and read the verdict off its interval."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Mapping, Sequence

import numpy as np

from speechmerge.evaluation import metrics as M
from speechmerge.evaluation import stats as S
from speechmerge.evaluation.corpus_metrics import accuracy
from speechmerge.report.claims.definitions import (
    ONE_SEED,
    QUANTITIES,
    SEEDS,
    ClaimDef,
    ClaimResult,
    Side,
    bootstrap_p,
    claims_for,
    verdict,
)
from speechmerge.report.claims.ranks import aligned_ranks, spearman_test
from speechmerge.report.layouts import layout
from speechmerge.report.scores import ResultStore
from speechmerge.report.table import Column, Table, row_models, seed_rows


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
