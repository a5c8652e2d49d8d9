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

Significance: every base and mean cell is compared with the same column of the
``baseline_for_significance`` row by a paired bootstrap (Koehn 2004) on the same utterances
(stratified by test set for means); p-values go to ``significance.csv`` (with a MAPSSWE-style
matched-pairs p for single error-rate columns), and cells with p < 0.05 carry a dagger in
Markdown and LaTeX.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from speechmerge import names as N
from speechmerge.evaluation import stats as S
from speechmerge.report.scores import ResultStore
from speechmerge.report.table import Cell, Column, Row, Table, row_model


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
            cells[c.key] = Cell(value=params_value(row_spec["model"], c, params))
    return cells


def base_cell(store: ResultStore, row_spec: Mapping, c: Column, with_ci: bool) -> Cell:
    model = row_model(row_spec, c.subset, c.testset)
    cell = Cell(value=store.value(model, c.testset, c.metric), model=model)
    if not with_ci:
        return cell
    cs = store.corpus_stats(model, c.testset, c.metric)
    if math.isnan(cell.value):
        return cell
    if cs is not None:
        cell.ci = S.bootstrap_ci(cs, n_boot=store.n_boot, seed=store.seed)
    else:
        cell.ci = store.stored_ci(model, c.testset, c.metric)
    return cell


def mean_cell(
    table: Table, store: ResultStore, row_spec: Mapping, c: Column, cells: Mapping[str, Cell], with_ci: bool
) -> Cell:
    """Unweighted mean of the part columns (NaN if any is missing), with a stratified interval."""
    vals = [cells[k].value for k in c.parts]
    value = float(np.mean(vals)) if vals and not any(math.isnan(v) for v in vals) else math.nan
    cell = Cell(value=value)
    sets = part_stats(table, store, row_spec, c) if with_ci and not math.isnan(value) else None
    if sets:
        cell.ci = S.percentile_interval(S.bootstrap_mean_scores(sets, n_boot=store.n_boot, seed=store.seed))
    return cell


def part_stats(table: Table, store: ResultStore, row_spec: Mapping, c: Column) -> list | None:
    """Corpus statistics of every part of a mean column, or None if one has no hypotheses."""
    out = []
    for pc in table.parts(c):
        cs = store.corpus_stats(row_model(row_spec, pc.subset, pc.testset), pc.testset, pc.metric)
        if cs is None:
            return None
        out.append(cs)
    return out


def params_value(model: str, c: Column, params: Mapping[str, Mapping] | None) -> float:
    """Trainable parameters (count or percentage) of a row's model; 0 for zero-shot."""
    info = (params or {}).get(model)
    if model in N.START_MODELS:
        return 0.0
    if info is None:
        return math.nan
    return float(info["trainable_params"] if c.kind == "params" else info["trainable_percent"])


def accuracy(metric: str, value: float) -> float:
    """What NP averages: max(0, 100 - x) for an error rate, the score itself otherwise."""
    return max(0.0, 100.0 - value) if metric in S.ERROR_METRICS else value


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
    """(row, baseline) corpus statistics on the same utterances for every part of a column, or
    None when a part has no hypotheses or both sides are the same model."""
    pairs = []
    for pc in [c] if c.kind == "base" else table.parts(c):
        ma, mb = row_model(row.spec, pc.subset, pc.testset), row_model(baseline, pc.subset, pc.testset)
        if ma is None or mb is None or ma == mb:
            return None
        a, b = store.corpus_stats(ma, pc.testset, pc.metric), store.corpus_stats(mb, pc.testset, pc.metric)
        if a is None or b is None:
            return None
        if a.ids != b.ids:
            ra, rb = S.check_paired(
                store.hyps[(ma, pc.testset)],
                store.hyps[(mb, pc.testset)],
                what_a=f"{ma}/{pc.testset}",
                what_b=f"{mb}/{pc.testset}",
            )
            a, b = S.corpus_stats(ra, pc.metric), S.corpus_stats(rb, pc.metric)
        pairs.append((a, b))
    return pairs


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
        if c.kind == "base" and c.metric in S.ERROR_METRICS:
            entry["p_matched_pairs"] = S.matched_pairs_test(pairs[0][0], pairs[0][1])["p_value"]
        table.significance.append(entry)
