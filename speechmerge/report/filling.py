"""Filling a table: every cell's value, its 95 % interval, normalised performance and the
paired significance test against the baseline row.

Values come from the score files; 95 % intervals from a bootstrap over the utterances of the
hypothesis files (percentile, ``n_boot`` replicates, seeded), stratified by test set for mean
columns (utterances resampled within each test set); without hypotheses, an interval stored in
the score file is used.

Normalised performance (the LoRS-Merging paper does not publish its formula; this is ours, see
docs/methods.md): for every base column c of the group, a_c(row) = max(0, 100 - WER) (or CER)
for error rates and a_c(row) = BLEU for BLEU; NP(row) = 100 * mean_c a_c(row) / a_c(ref), with
ref the ``normalise_to`` row (the individual experts). So the experts row has NP = 100 and
NP > 100 means better than the experts on average. Columns where a_c(ref) = 0 are skipped.

Several training seeds (a row with ``seeds``): a cell is the mean over seeds of the per-seed
score, ``sd`` the across-seed standard deviation (of the per-seed mean for mean columns), the
interval a two-level bootstrap over seeds and utterances (``stats.seed_bootstrap_scores``); NP
is computed from the seed means. A row without seeds (zero-shot, θ₀) is one model for every
seed. With one seed every number is the one-seed number.

Significance: every base and mean cell is compared with the same column of the
``baseline_for_significance`` row by a paired bootstrap (Koehn 2004) on the same utterances
(stratified by test set for means); p-values go to ``significance.csv`` (with a MAPSSWE-style
matched-pairs p for single error-rate columns of one seed), and cells; with several seeds the
bootstrap also resamples seeds, the row's seed k paired with the baseline's seed k. Cells with p < 0.05 carry a dagger in
Markdown and LaTeX.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from speechmerge import names as N
from speechmerge.evaluation import stats as S
from speechmerge.evaluation.corpus_metrics import accuracy
from speechmerge.report.scores import ResultStore
from speechmerge.report.table import Cell, Column, Row, Table, row_models, seed_rows


def fill_table(
    table: Table,
    store: ResultStore,
    *,
    reference: Mapping | None = None,
    baseline: Mapping | None = None,
    params: Mapping[str, Mapping] | None = None,
) -> Table:
    """Compute every cell: values, intervals, NP against ``reference`` (a spec row) and
    p-values against ``baseline`` (a spec row)."""
    ref_cells = row_cells(table, store, reference, with_ci=False, params=params) if reference is not None else None
    for row in table.rows:
        row.cells = row_cells(table, store, row.spec, params=params)
        for c in table.columns:
            if c.kind == "np":
                row.cells[c.key] = Cell(value=np_value(table, row.cells, ref_cells, c) if ref_cells else math.nan)
        if baseline is not None and row.spec is not baseline:
            add_significance(table, store, row, baseline)
    return table


def row_cells(
    table: Table,
    store: ResultStore,
    row_spec: Mapping,
    *,
    with_ci: bool = True,
    params: Mapping[str, Mapping] | None = None,
) -> dict[str, Cell]:
    """The base, mean and parameter cells of one row (NP cells need the reference row)."""
    cells: dict[str, Cell] = {}
    for c in table.columns:
        if c.kind == "base":
            cells[c.key] = base_cell(store, row_spec, c, with_ci)
    for c in table.columns:
        if c.kind == "mean":
            cells[c.key] = mean_cell(table, store, row_spec, c, cells, with_ci)
    for c in table.columns:
        if c.kind in ("params", "params_pct"):
            cells[c.key] = Cell(value=params_value(seed_rows(row_spec)[0]["model"], c, params))
    return cells


def base_cell(store: ResultStore, row_spec: Mapping, c: Column, with_ci: bool) -> Cell:
    models = row_models(row_spec, c.subset, c.testset)
    if len(models) == 1:
        cell = Cell(value=store.value(models[0], c.testset, c.metric), model=models[0])
    else:
        values = [store.value(m, c.testset, c.metric) for m in models]
        value = math.nan if any(math.isnan(v) for v in values) else float(np.mean(values))
        cell = Cell(value=value, sd=S.seed_sd(values), seed_values=values, models=models)
    if not with_ci or math.isnan(cell.value):
        return cell
    seeds = seed_stats(store, models, c.testset, c.metric)
    if seeds is not None:
        cell.ci = S.seed_bootstrap_ci(seeds, n_boot=store.n_boot, seed=store.seed)
    elif len(models) == 1:
        cell.ci = store.stored_ci(models[0], c.testset, c.metric)
    return cell


def seed_stats(store: ResultStore, models, testset: str, metric: str) -> list | None:
    """Corpus statistics of every seed's model on one test set, aligned on the first's
    utterance order; None if one has no hypotheses (or a model is missing)."""
    out = []
    for m in models:
        cs = store.corpus_stats(m, testset, metric)
        if cs is None:
            return None
        if out and cs.ids != out[0].ids:
            _, recs = S.check_paired(
                store.hyps[(models[0], testset)],
                store.hyps[(m, testset)],
                what_a=f"{models[0]}/{testset}",
                what_b=f"{m}/{testset}",
            )
            cs = S.corpus_stats(recs, metric)
        out.append(cs)
    return out


def mean_cell(
    table: Table, store: ResultStore, row_spec: Mapping, c: Column, cells: Mapping[str, Cell], with_ci: bool
) -> Cell:
    """Unweighted mean of the part columns (NaN if any is missing), with a stratified interval."""
    vals = [cells[k].value for k in c.parts]
    value = float(np.mean(vals)) if vals and not any(math.isnan(v) for v in vals) else math.nan
    cell = Cell(value=value)
    per_seed = [cells[k].seed_values for k in c.parts]
    if per_seed and all(v is not None for v in per_seed):
        cell.seed_values = [float(np.mean(v)) for v in zip(*per_seed)]  # each seed's own mean
        cell.sd = S.seed_sd(cell.seed_values)
    sets = part_stats(table, store, row_spec, c) if with_ci and not math.isnan(value) else None
    if sets:
        cell.ci = S.percentile_interval(S.seed_bootstrap_mean_scores(sets, n_boot=store.n_boot, seed=store.seed))
    return cell


def part_stats(table: Table, store: ResultStore, row_spec: Mapping, c: Column) -> list | None:
    """Per-seed corpus statistics of every part of a mean column, or None if one has no hypotheses."""
    out = []
    for pc in table.parts(c):
        seeds = seed_stats(store, row_models(row_spec, pc.subset, pc.testset), pc.testset, pc.metric)
        if seeds is None:
            return None
        out.append(seeds)
    return out


def params_value(model: str, c: Column, params: Mapping[str, Mapping] | None) -> float:
    """Trainable parameters (count or percentage) of a row's model; 0 for zero-shot."""
    info = (params or {}).get(model)
    if model in N.START_MODELS:
        return 0.0
    if info is None:
        return math.nan
    return float(info["trainable_params"] if c.kind == "params" else info["trainable_percent"])


def np_value(table: Table, cells: Mapping[str, Cell], ref_cells: Mapping[str, Cell], c: Column) -> float:
    """Normalised performance of a row against the reference row (module docstring)."""
    ratios = []
    for pc in table.parts(c):
        v, r = cells[pc.key].value, ref_cells[pc.key].value
        if math.isnan(v) or math.isnan(r):
            return math.nan
        if accuracy(pc.metric, r) <= 0:
            continue
        ratios.append(accuracy(pc.metric, v) / accuracy(pc.metric, r))
    return 100.0 * float(np.mean(ratios)) if ratios else math.nan


def paired_stats(table: Table, store: ResultStore, row: Row, baseline: Mapping, c: Column) -> list | None:
    """(row, baseline) per-seed corpus statistics on the same utterances for every part of a
    column, or None when a part has no hypotheses or both sides are the same models."""
    pairs = []
    for pc in [c] if c.kind == "base" else table.parts(c):
        ma, mb = row_models(row.spec, pc.subset, pc.testset), row_models(baseline, pc.subset, pc.testset)
        if None in ma or None in mb or ma == mb:
            return None
        a = seed_stats(store, ma, pc.testset, pc.metric)
        b = seed_stats(store, mb, pc.testset, pc.metric)
        if a is None or b is None:
            return None
        if a[0].ids != b[0].ids:
            ra, rb = S.check_paired(
                store.hyps[(ma[0], pc.testset)],
                store.hyps[(mb[0], pc.testset)],
                what_a=f"{ma[0]}/{pc.testset}",
                what_b=f"{mb[0]}/{pc.testset}",
            )
            order = [r["id"] for r in ra]
            a = [_reorder(store, m, pc.testset, pc.metric, order) for m in ma]
            b = [_reorder(store, m, pc.testset, pc.metric, order) for m in mb]
        pairs.append((a, b))
    return pairs


def _reorder(store: ResultStore, model: str, testset: str, metric: str, order: list) -> S.CorpusStats:
    by_id = {r["id"]: r for r in store.hyps[(model, testset)]}
    return S.corpus_stats([by_id[i] for i in order], metric)


def add_significance(table: Table, store: ResultStore, row: Row, baseline: Mapping) -> None:
    """Paired bootstrap of every base and mean cell of ``row`` against ``baseline``: the p-value
    goes on the cell, the whole test into ``table.significance``."""
    for c in table.columns:
        if c.kind not in ("base", "mean"):
            continue
        pairs = paired_stats(table, store, row, baseline, c)
        if not pairs:
            continue
        res = S.paired_bootstrap_mean(
            [p[0] for p in pairs], [p[1] for p in pairs], n_boot=store.n_boot, seed=store.seed
        )
        row.cells[c.key].p = res["p_value"]
        entry = {
            "table": table.name,
            "row": row.label,
            "column": c.key,
            "metric": c.metric,
            "model": row.model,
            "baseline": baseline["model"],
            "score": res["score_a"],
            "baseline_score": res["score_b"],
            "delta": res["delta"],
            "delta_ci_lo": res["delta_ci"][0],
            "delta_ci_hi": res["delta_ci"][1],
            "p_bootstrap": res["p_value"],
            "p_koehn": res["p_koehn"],
            "p_matched_pairs": None,
            "n_utterances": res["n"],
            "n_testsets": res["n_sets"],
        }
        if res["n_seeds"] > 1:
            entry["n_seeds"] = res["n_seeds"]
        elif c.kind == "base" and c.metric in S.ERROR_METRICS:
            entry["p_matched_pairs"] = S.matched_pairs_test(pairs[0][0][0], pairs[0][1][0])["p_value"]
        table.significance.append(entry)
