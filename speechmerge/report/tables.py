"""The papers' tables from score JSONs and hypothesis JSONLs: CSV, Markdown and LaTeX.

A table is a list of rows (models, from the report spec) by a list of columns:

* **base** columns: one test set (``{subset}-{task}``) and its metric: WER (CER for languages
  without word spaces, and throughout the ``peft`` experiment) for transcription, BLEU for
  translation. Values come from the score files; 95 % intervals from a bootstrap over the
  utterances of the hypothesis files (percentile, ``n_boot`` replicates, seeded);
* **mean** columns: the unweighted mean of several base columns (e.g. the average WER over
  languages); the interval is a stratified bootstrap (utterances resampled within each test set);
* **np** columns: normalised performance (below);
* **params** columns: trainable parameters from ``train_info.json``.

Normalised performance (the LoRS-Merging paper does not publish its formula; this is ours):
for every base column c of the group, a_c(row) = max(0, 100 - WER) (or CER) for error rates and
a_c(row) = BLEU for BLEU; NP(row) = 100 * mean_c a_c(row) / a_c(ref), with ref the
``normalise_to`` row (the individual experts). So the experts row has NP = 100 and NP > 100
means better than the experts on average. Columns where a_c(ref) = 0 are skipped.

Significance: every base and mean cell is compared with the same column of the
``baseline_for_significance`` row by a paired bootstrap (Koehn 2004) on the same utterances
(stratified by test set for means); p-values are in ``significance.csv`` (with a
MAPSSWE-style matched-pairs p for single error-rate columns), and cells with p < 0.05 carry a
dagger in Markdown and LaTeX. The best value of each column is bold.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from speechmerge.evaluation import metrics as M
from speechmerge.evaluation import stats as S

log = logging.getLogger(__name__)

ALPHA = 0.05
GREEK = {"beta": "β", "lambda": "λ", "alpha": "α"}
METRIC_LABEL = {"wer": "WER", "cer": "CER", "bleu": "BLEU", "chrf": "chrF", "np": "NP",
                "params": "Params", "params_pct": "Params %"}


# --------------------------------------------------------------------------- inputs


def flatten_scores(doc: Mapping, where: str = "scores") -> list[dict]:
    """One score file -> score records (a single record, or ``{"results": [records]}``)."""
    if "results" in doc:
        recs = [dict(r) for r in doc["results"]]
    else:
        recs = [dict(doc)]
    for r in recs:
        for key in ("model", "testset", "metrics"):
            if key not in r:
                raise ValueError(f"{where}: score record lacks {key!r}")
    return recs


def load_scores(paths: Iterable[str | Path]) -> list[dict]:
    out = []
    for p in paths:
        out += flatten_scores(json.loads(Path(p).read_text()), where=str(p))
    return out


def load_hyps(paths: Iterable[str | Path]) -> dict[tuple[str, str], list[dict]]:
    """Hypothesis files -> {(model, testset): records}; records without a ``testset`` field take
    the file's stem as test set."""
    from speechmerge.evaluation.decode import read_hypotheses, split_by_testset

    out: dict[tuple[str, str], list[dict]] = {}
    for p in paths:
        recs = read_hypotheses(p)
        model = recs[0]["model"]
        for testset, group in split_by_testset(recs, default=Path(p).stem).items():
            if (model, testset) in out:
                raise ValueError(f"{p}: hypotheses of model {model!r} on {testset!r} appear in two files")
            out[(model, testset)] = group
    return out


class ResultStore:
    """Score records and hypotheses indexed by (model, testset); corpus statistics cached."""

    def __init__(self, score_records: Sequence[Mapping], hyps: Mapping[tuple[str, str], list[dict]] | None = None,
                 *, n_boot: int = 1000, seed: int = 0, metric_override: str | None = None):
        self.scores: dict[tuple[str, str], dict] = {}
        for r in score_records:
            key = (r["model"], r["testset"])
            if key in self.scores and self.scores[key]["metrics"] != r["metrics"]:
                raise ValueError(f"two different score records for model {key[0]!r} on {key[1]!r}")
            self.scores[key] = dict(r)
        self.hyps = dict(hyps or {})
        self.n_boot, self.seed = n_boot, seed
        self.metric_override = metric_override
        self._stats: dict[tuple[str, str, str], S.CorpusStats] = {}
        self.missing: list[str] = []

    def metric_for(self, testset: str) -> str:
        """The metric a table shows for a test set: BLEU for translation, else the error rate."""
        task = testset.rsplit("-", 1)[-1]
        if task == "translate":
            return "bleu"
        if self.metric_override:
            return self.metric_override
        for (m, t), r in self.scores.items():
            if t == testset:
                lang = r.get("language")
                if r.get("primary_metric") in ("wer", "cer"):
                    return r["primary_metric"]
                if isinstance(lang, str):
                    return M.primary_error_metric(lang)
        return "wer"

    def value(self, model: str | None, testset: str, metric: str) -> float:
        rec = self.scores.get((model, testset)) if model else None
        if rec is None:
            if model:
                self.missing.append(f"{model} on {testset}")
            return math.nan
        if metric not in rec["metrics"]:
            raise KeyError(f"scores of model {model!r} on {testset!r} have no {metric!r} "
                           f"(have {sorted(rec['metrics'])})")
        return float(rec["metrics"][metric])

    def corpus_stats(self, model: str | None, testset: str, metric: str) -> S.CorpusStats | None:
        if not model or (model, testset) not in self.hyps:
            return None
        key = (model, testset, metric)
        if key not in self._stats:
            self._stats[key] = S.corpus_stats(self.hyps[(model, testset)], metric)
        return self._stats[key]

    def stored_ci(self, model: str | None, testset: str, metric: str):
        rec = self.scores.get((model, testset)) if model else None
        ci = (rec or {}).get("ci95", {}).get(metric)
        return tuple(ci) if ci else None


# --------------------------------------------------------------------------- structure


@dataclass
class Column:
    key: str
    header: str
    group: str
    metric: str
    kind: str  # base | mean | np | params | params_pct
    testset: str | None = None
    subset: str | None = None
    parts: list[str] = field(default_factory=list)
    show: bool = True

    @property
    def higher_is_better(self) -> bool | None:
        if self.kind in ("params", "params_pct"):
            return None
        return self.metric in ("bleu", "chrf", "np")


@dataclass
class Cell:
    value: float = math.nan
    ci: tuple[float, float] | None = None
    p: float | None = None
    model: str | None = None


@dataclass
class Row:
    label: str
    model: str
    group: str
    cells: dict[str, Cell] = field(default_factory=dict)
    spec: dict = field(default_factory=dict)


@dataclass
class Table:
    name: str
    title: str
    columns: list[Column]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    significance: list[dict] = field(default_factory=list)
    row_header: str = "Method"

    @property
    def shown(self) -> list[Column]:
        return [c for c in self.columns if c.show]

    def value(self, model_or_label: str, key: str) -> float:
        for r in self.rows:
            if model_or_label in (r.model, r.label):
                return r.cells[key].value
        raise KeyError(f"table {self.name}: no row {model_or_label!r}")

    def best(self, key: str) -> float | None:
        col = next(c for c in self.columns if c.key == key)
        vals = [r.cells[key].value for r in self.rows if not math.isnan(r.cells[key].value)]
        if col.higher_is_better is None or not vals:
            return None
        return max(vals) if col.higher_is_better else min(vals)


def row_model(row: Mapping, subset: str | None, testset: str | None = None) -> str | None:
    """The model that fills a row's cell for ``subset`` / ``testset`` (composite rows: their
    expert, by test set -- one expert per language x task -- or by subset)."""
    if "per_testset" in row:
        return row["per_testset"].get(testset)
    if "per_subset" in row:
        return row["per_subset"].get(subset)
    return row["model"]


def base_column(store: ResultStore, subset: str, task: str, group: str, *, header: str | None = None,
                show: bool = True) -> Column:
    testset = f"{subset}-{task}"
    metric = store.metric_for(testset)
    return Column(key=f"{metric}:{testset}", header=header or subset, group=group, metric=metric,
                  kind="base", testset=testset, subset=subset, show=show)


def mean_column(key: str, header: str, group: str, parts: Sequence[Column], *, show: bool = True) -> Column | None:
    parts = list(parts)
    if not parts:
        return None
    metrics = {c.metric for c in parts}
    if len(metrics) != 1:
        raise ValueError(f"column {key}: cannot average different metrics {sorted(metrics)}")
    return Column(key=key, header=header, group=group, metric=metrics.pop(), kind="mean",
                  parts=[c.key for c in parts], show=show)


# --------------------------------------------------------------------------- filling


def fill_table(table: Table, store: ResultStore, *, reference: Mapping | None = None,
               baseline: Mapping | None = None, params: Mapping[str, Mapping] | None = None) -> Table:
    """Compute every cell: values, intervals, NP against ``reference`` (a spec row) and
    p-values against ``baseline`` (a spec row)."""
    cols = {c.key: c for c in table.columns}

    def base_cell(row_spec, c: Column, with_ci: bool) -> Cell:
        model = row_model(row_spec, c.subset, c.testset)
        cell = Cell(value=store.value(model, c.testset, c.metric), model=model)
        if not with_ci:
            return cell
        cs = store.corpus_stats(model, c.testset, c.metric)
        if cs is not None and not math.isnan(cell.value):
            cell.ci = S.bootstrap_ci(cs, n_boot=store.n_boot, seed=store.seed)
        elif not math.isnan(cell.value):
            cell.ci = store.stored_ci(model, c.testset, c.metric)
        return cell

    def mean_value(cells: Mapping[str, Cell], c: Column) -> float:
        vals = [cells[k].value for k in c.parts]
        return float(np.mean(vals)) if vals and not any(math.isnan(v) for v in vals) else math.nan

    def part_stats(row_spec, c: Column):
        out = []
        for k in c.parts:
            pc = cols[k]
            cs = store.corpus_stats(row_model(row_spec, pc.subset, pc.testset), pc.testset, pc.metric)
            if cs is None:
                return None
            out.append(cs)
        return out

    def np_value(cells, ref_cells, c: Column) -> float:
        ratios = []
        for k in c.parts:
            pc = cols[k]
            v, r = cells[k].value, ref_cells[k].value
            if math.isnan(v) or math.isnan(r):
                return math.nan
            acc = (lambda x: max(0.0, 100.0 - x)) if pc.metric in S.ERROR_METRICS else (lambda x: x)
            if acc(r) <= 0:
                continue
            ratios.append(acc(v) / acc(r))
        return 100.0 * float(np.mean(ratios)) if ratios else math.nan

    def compute(row_spec, with_ci: bool = True) -> dict[str, Cell]:
        cells: dict[str, Cell] = {}
        for c in table.columns:
            if c.kind == "base":
                cells[c.key] = base_cell(row_spec, c, with_ci)
        for c in table.columns:
            if c.kind == "mean":
                cell = Cell(value=mean_value(cells, c))
                sets = part_stats(row_spec, c) if with_ci and not math.isnan(cell.value) else None
                if sets:
                    cell.ci = S.percentile_interval(S.bootstrap_mean_scores(sets, n_boot=store.n_boot, seed=store.seed))
                cells[c.key] = cell
        for c in table.columns:
            if c.kind in ("params", "params_pct"):
                info = (params or {}).get(row_spec["model"])
                if row_spec["model"] == "zeroshot":
                    v = 0.0
                elif info is None:
                    v = math.nan
                else:
                    v = float(info["trainable_params"] if c.kind == "params" else info["trainable_percent"])
                cells[c.key] = Cell(value=v)
        return cells

    ref_cells = compute(reference, with_ci=False) if reference is not None else None
    for row in table.rows:
        row.cells = compute(row.spec)
        for c in table.columns:
            if c.kind == "np":
                row.cells[c.key] = Cell(value=np_value(row.cells, ref_cells, c) if ref_cells else math.nan)
        if baseline is not None and row.spec is not baseline:
            _significance(table, store, row, baseline, cols)
    return table


def _significance(table: Table, store: ResultStore, row: Row, baseline: Mapping, cols) -> None:
    for c in table.columns:
        if c.kind not in ("base", "mean"):
            continue
        keys = [c.key] if c.kind == "base" else c.parts
        pairs = []
        for k in keys:
            pc = cols[k]
            ma, mb = row_model(row.spec, pc.subset, pc.testset), row_model(baseline, pc.subset, pc.testset)
            if ma is None or mb is None or ma == mb:
                pairs = None
                break
            a, b = store.corpus_stats(ma, pc.testset, pc.metric), store.corpus_stats(mb, pc.testset, pc.metric)
            if a is None or b is None:
                pairs = None
                break
            if a.ids != b.ids:
                ra, rb = S.check_paired(store.hyps[(ma, pc.testset)], store.hyps[(mb, pc.testset)],
                                        what_a=f"{ma}/{pc.testset}", what_b=f"{mb}/{pc.testset}")
                a, b = S.corpus_stats(ra, pc.metric), S.corpus_stats(rb, pc.metric)
            pairs.append((a, b))
        if not pairs:
            continue
        res = S.paired_bootstrap_mean([p[0] for p in pairs], [p[1] for p in pairs],
                                      n_boot=store.n_boot, seed=store.seed)
        row.cells[c.key].p = res["p_value"]
        entry = {"table": table.name, "row": row.label, "column": c.key, "metric": c.metric,
                 "model": row.model, "baseline": baseline["model"], "score": res["score_a"],
                 "baseline_score": res["score_b"], "delta": res["delta"], "delta_ci_lo": res["delta_ci"][0],
                 "delta_ci_hi": res["delta_ci"][1], "p_bootstrap": res["p_value"], "p_koehn": res["p_koehn"],
                 "p_matched_pairs": None, "n_utterances": res["n"], "n_testsets": res["n_sets"]}
        if c.kind == "base" and c.metric in S.ERROR_METRICS:
            entry["p_matched_pairs"] = S.matched_pairs_test(pairs[0][0], pairs[0][1])["p_value"]
        table.significance.append(entry)


# --------------------------------------------------------------------------- layouts


def _rows(spec_rows: Sequence[Mapping]) -> list[Row]:
    return [Row(label=r.get("label", r["model"]), model=r["model"], group=r.get("group", ""), spec=dict(r))
            for r in spec_rows]


def _find_row(spec: Mapping, model: str | None, what: str) -> dict | None:
    if not model:
        return None
    for r in spec["rows"]:
        if r["model"] == model:
            return dict(r)
    log.warning("report spec: %s row %r is not among the rows; ignored", what, model)
    return None


def _sig_note(spec: Mapping, baseline: Mapping | None, n_boot: int) -> list[str]:
    if baseline is None:
        return []
    return [f"† differs from {baseline.get('label', baseline['model'])} at p < {ALPHA:g} (paired bootstrap over "
            f"utterances, {n_boot} resamples, two-sided; stratified by test set for averages); "
            "p-values in significance.csv."]


def multilingual_columns(spec: Mapping, store: ResultStore) -> list[Column]:
    cols: list[Column] = []
    tasks = list(spec.get("tasks", ["transcribe"]))
    np_groups = {}
    for task in tasks:
        subsets = [s for s in spec["subsets"] if not (task == "translate" and M.base_language(s) == "en")]
        base = []
        for s in subsets:
            base.append(base_column(store, s, task, ""))
        metric = base[0].metric if base else ("bleu" if task == "translate" else "wer")
        group = ("ASR " if task == "transcribe" else "ST ") + METRIC_LABEL[metric] + (" ↑" if metric == "bleu" else " (%) ↓")
        for c in base:
            c.group = group
        cols += base
        m = mean_column(f"{metric}:avg-{task}", "Avg", group, base)
        if m:
            cols.append(m)
        np_groups[task] = base
    if spec.get("normalise_to"):
        all_base = [c for t in tasks for c in np_groups[t]]
        if len(tasks) > 1:
            for task in tasks:
                cols.append(Column(key=f"np:{task}", header="ASR" if task == "transcribe" else "ST", group="NP ↑",
                                   metric="np", kind="np", parts=[c.key for c in np_groups[task]]))
        cols.append(Column(key="np", header="All" if len(tasks) > 1 else "NP", group="NP ↑", metric="np",
                           kind="np", parts=[c.key for c in all_base]))
    return cols


def domains_columns(spec: Mapping, store: ResultStore, *, show_base: bool = False) -> list[Column]:
    idc = [base_column(store, s, "transcribe", "In-domain", show=show_base) for s in spec["subsets"]]
    ood = [base_column(store, s, "transcribe", "Out-of-domain", show=show_base) for s in spec.get("ood_subsets", [])]
    ret = spec.get("retention_subsets", [])
    en = [base_column(store, s, "transcribe", "Retention", show=show_base) for s in ret
          if M.base_language(s) == "en"]
    multi = [base_column(store, s, "transcribe", "Retention", show=show_base) for s in ret
             if M.base_language(s) != "en"]
    metric = idc[0].metric if idc else "wer"
    grp = f"{METRIC_LABEL[metric]} (%) ↓"
    cols = idc + ood + en + multi
    for key, header, parts in (("id", "ID", idc), ("ood", "OOD", ood), ("en", "English", en),
                               ("multi", "Multilingual", multi), ("avg", "Avg", idc + ood + en + multi)):
        m = _mean_mixed(f"{metric}:{key}", header, grp, parts)
        if m:
            cols.append(m)
    return cols


def _mean_mixed(key, header, group, parts):
    """A mean column over error-rate columns that may mix WER and CER (a retention set in a
    language without word spaces is scored by CER); labelled WER unless all parts are CER."""
    if not parts:
        return None
    metrics = {c.metric for c in parts}
    metric = metrics.pop() if len(metrics) == 1 else "wer"
    return Column(key=key, header=header, group=group, metric=metric, kind="mean", parts=[c.key for c in parts])


def peft_columns(spec: Mapping, store: ResultStore) -> list[Column]:
    ind = [base_column(store, s, "transcribe", "In-domain CER (%) ↓") for s in spec["subsets"]]
    cross = [base_column(store, s, "transcribe", "Cross-domain CER (%) ↓") for s in spec.get("peft_cross_subsets", [])]
    cols = ind + cross
    if len(cross) > 1:
        cols.append(mean_column("cer:avg-cross", "Avg", "Cross-domain CER (%) ↓", cross))
    cols.append(Column(key="params", header="#", group="Trainable params", metric="params", kind="params"))
    cols.append(Column(key="params_pct", header="%", group="Trainable params", metric="params_pct", kind="params_pct"))
    return cols


def build_main_table(spec: Mapping, store: ResultStore, *, params: Mapping[str, Mapping] | None = None) -> Table:
    kind = spec["kind"]
    if kind == "multilingual":
        cols = multilingual_columns(spec, store)
        title = f"{spec['experiment']}: multilingual ASR and X→En ST per language (LoRS-Merging layout)"
    elif kind == "domains":
        cols = domains_columns(spec, store)
        title = f"{spec['experiment']}: in-domain, out-of-domain and retention error rates (BoostedTSV-M layout)"
    elif kind == "peft":
        cols = peft_columns(spec, store)
        title = f"{spec['experiment']}: in-domain and cross-domain CER and trainable parameters (S2-LoRA layout)"
    else:
        raise ValueError(f"report spec: unknown kind {kind!r} (multilingual, domains, peft)")
    reference = _find_row(spec, spec.get("normalise_to"), "normalise_to") if kind == "multilingual" else None
    baseline = _find_row(spec, spec.get("baseline_for_significance"), "baseline_for_significance")
    table = Table(name="table", title=title, columns=cols, rows=_rows(spec["rows"]))
    fill_table(table, store, reference=reference, baseline=baseline, params=params)
    table.notes = _notes(spec, table, reference, baseline, store)
    return table


def _notes(spec, table, reference, baseline, store) -> list[str]:
    notes = []
    kinds = {c.metric for c in table.columns if c.kind in ("base", "mean")}
    if kinds & {"wer", "cer"}:
        notes.append("WER/CER in % after Whisper's text normalisers (corpus level: total edits / total reference "
                     "words or characters); lower is better.")
    if "bleu" in kinds:
        sigs = sorted({r.get("bleu_signature") for r in store.scores.values() if r.get("bleu_signature")})
        notes.append("BLEU: sacrebleu corpus BLEU on detokenised output" + (f" ({'; '.join(sigs)})" if sigs else "")
                     + "; higher is better.")
    if spec["kind"] == "multilingual" and reference is not None:
        notes.append(f"NP (normalised performance) = 100 × mean over per-language columns of a(row)/a("
                     f"{reference.get('label', reference['model'])}), a = max(0, 100 − WER) for ASR and a = BLEU for ST; "
                     "Avg = unweighted mean over languages.")
    if spec["kind"] == "domains":
        notes.append("ID = mean over in-domain test sets; OOD = mean over out-of-domain sets; English / "
                     "Multilingual = retention sets; Avg = unweighted mean over every test set of the row "
                     "(per-test-set values in per_testset.*). Rows with missing columns (experts) have no Avg.")
    if spec["kind"] == "peft":
        notes.append("Trainable parameters counted once (proj_out tied to the token embedding); % of the total.")
    if any(r.spec.get("per_subset") or r.spec.get("per_testset") for r in table.rows):
        notes.append("Composite rows (experts) take each column from the model trained on that subset.")
    notes.append("Bold: best in column. 95 % bootstrap intervals (utterances resampled, percentile) in table.csv.")
    notes += _sig_note(spec, baseline, store.n_boot)
    return notes


def build_per_testset_table(spec: Mapping, store: ResultStore) -> Table:
    """Every test set of the domains experiment as its own column."""
    cols = domains_columns(spec, store, show_base=True)
    for c in cols:
        if c.kind == "mean":
            c.show = c.key.endswith(":avg")
    baseline = _find_row(spec, spec.get("baseline_for_significance"), "baseline_for_significance")
    table = Table(name="per_testset", title=f"{spec['experiment']}: error rate per test set", columns=cols,
                  rows=_rows(spec["rows"]))
    fill_table(table, store, baseline=baseline)
    table.notes = ["Error rates (%) per test set; lower is better. Bold: best in column."] + _sig_note(
        spec, baseline, store.n_boot)
    return table


def build_sweep_tables(spec: Mapping, store: ResultStore) -> list[Table]:
    """One table per hyperparameter sweep: rows = sweep points, columns = the summary columns."""
    out = []
    for sw in spec.get("sweeps", []):
        rows = [{"model": p["model"], "label": f"{sw['param']} = {p['value']}" + (" (default)" if p.get("default") else ""),
                 "group": "sweep", "value": p["value"]} for p in sw["points"]]
        if spec["kind"] == "multilingual":
            cols = multilingual_columns(spec, store)
            for c in cols:
                c.show = c.kind != "base"
        else:
            cols = domains_columns(spec, store)
        reference = _find_row(spec, spec.get("normalise_to"), "normalise_to") if spec["kind"] == "multilingual" else None
        label = sw.get("label") or next((r.get("label") for r in spec["rows"] if r.get("method") == sw["method"]),
                                        sw["method"])
        table = Table(name=f"sweep_{sw['method']}_{sw['param']}",
                      title=f"{spec['experiment']}: {label}, sweep of {GREEK.get(sw['param'], sw['param'])}",
                      columns=cols, rows=_rows(rows), row_header="Setting")
        fill_table(table, store, reference=reference)
        table.notes = [f"Merging method {sw['method']} with {sw['param']} varied (other hyperparameters at their "
                       "defaults). Bold: best in column."]
        out.append(table)
    return out


def build_forgetting_table(spec: Mapping, store: ResultStore) -> Table | None:
    """Sequential fine-tuning: error rate on every subset after each stage."""
    stages = spec.get("sequential") or []
    if not stages:
        return None
    cols = [base_column(store, s, "transcribe", "Error rate (%) ↓") for s in spec["subsets"]]
    rows = [{"model": st["model"], "label": f"stage {k}: +{st['subset']}", "group": "sequential",
             "subset": st["subset"], "stage": k} for k, st in enumerate(stages, 1)]
    if any(r["model"] == "zeroshot" for r in spec["rows"]):
        rows.insert(0, {"model": "zeroshot", "label": "stage 0: zero-shot", "group": "sequential", "stage": 0})
    table = Table(name="forgetting", title=f"{spec['experiment']}: sequential fine-tuning, error rate after each stage",
                  columns=cols, rows=_rows(rows), row_header="Stage")
    fill_table(table, store)
    table.notes = ["Stage k fine-tunes the model of stage k−1 on one more subset (named in the row); stage 0 is "
                   "the zero-shot model. Rising values in earlier columns = forgetting."]
    return table


# --------------------------------------------------------------------------- rendering


def _fmt(c: Column, v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if c.kind == "params":
        return human_count(v)
    if c.kind == "params_pct":
        return f"{v:.3g}" if v < 1 else f"{v:.1f}"
    if c.kind == "np":
        return f"{v:.1f}"
    return f"{v:.2f}"


def human_count(v: float) -> str:
    v = float(v)
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.0f}"


def _is_best(table: Table, c: Column, v: float) -> bool:
    b = table.best(c.key)
    return b is not None and not math.isnan(v) and abs(v - b) <= 1e-9 * max(1.0, abs(b))


def _sig(cell: Cell) -> bool:
    return cell.p is not None and cell.p < ALPHA


def to_csv(table: Table) -> str:
    """All columns (shown or not), with 95 % intervals and p-values vs the baseline."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["row", "model", "group"]
    for c in table.columns:
        header += [c.key]
        if c.kind in ("base", "mean"):
            header += [f"{c.key}:ci_lo", f"{c.key}:ci_hi", f"{c.key}:p_vs_baseline"]
    w.writerow(header)
    for r in table.rows:
        line = [r.label, r.model, r.group]
        for c in table.columns:
            cell = r.cells.get(c.key, Cell())
            line.append("" if math.isnan(cell.value) else repr(round(cell.value, 6)))
            if c.kind in ("base", "mean"):
                lo, hi = cell.ci if cell.ci else ("", "")
                line += ["" if lo == "" else repr(round(lo, 6)), "" if hi == "" else repr(round(hi, 6)),
                         "" if cell.p is None else repr(round(cell.p, 6))]
        w.writerow(line)
    return buf.getvalue()


def _arrow_header(c: Column) -> str:
    if c.kind in ("params", "params_pct"):
        return "Params" if c.kind == "params" else "Params %"
    label = METRIC_LABEL.get(c.metric, c.metric)
    arrow = "↑" if c.higher_is_better else "↓"
    if c.kind == "np":
        return f"NP {c.header}↑" if c.header not in ("NP",) else "NP↑"
    return f"{c.header} {label}{arrow}"


def to_markdown(table: Table) -> str:
    cols = table.shown
    lines = [f"**{table.title}**", ""]
    groups = [c.group for c in cols]
    if any(groups) and len(set(groups)) > 1:
        spans, prev = [], None
        for c in cols:
            if c.group != prev:
                spans.append([c.group, 0])
                prev = c.group
            spans[-1][1] += 1
        lines += ["Column groups: " + "; ".join(f"{g or '—'} ({n} col.)" for g, n in spans), ""]
    lines.append(f"| {table.row_header} | " + " | ".join(_arrow_header(c) for c in cols) + " |")
    lines.append("|---|" + "|".join("---:" for _ in cols) + "|")
    prev_group = None
    for r in table.rows:
        if prev_group is not None and r.group != prev_group:
            lines.append("| " + " | ".join([""] * (len(cols) + 1)) + " |")
        prev_group = r.group
        cells = []
        for c in cols:
            cell = r.cells.get(c.key, Cell())
            s = _fmt(c, cell.value)
            if _is_best(table, c, cell.value):
                s = f"**{s}**"
            if _sig(cell):
                s += "†"
            cells.append(s)
        lines.append(f"| {md_escape(r.label)} | " + " | ".join(cells) + " |")
    if table.notes:
        lines += [""] + [f"* {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"↓": r"$\downarrow$", "↑": r"$\uparrow$", "→": r"$\rightarrow$", "λ": r"$\lambda$",
                  "β": r"$\beta$", "×": r"$\times$", "−": "--", "–": "--", "—": "---", "†": r"$^\dagger$",
                  "≥": r"$\geq$", "≤": r"$\leq$"}


def latex_escape(s: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(s))
    return "".join(_LATEX_UNICODE.get(ch, ch) for ch in out)


def to_latex(table: Table, *, label: str | None = None) -> str:
    cols = table.shown
    spans, prev = [], object()
    for c in cols:
        if c.group != prev:
            spans.append([c.group, 0])
            prev = c.group
        spans[-1][1] += 1
    lines = ["% generated by speechmerge.report.tables (needs \\usepackage{booktabs})",
             r"\begin{table}[t]", r"\centering", r"\small",
             f"\\caption{{{latex_escape(table.title)}}}", f"\\label{{tab:{label or table.name}}}",
             r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule"]
    if any(g for g, _ in spans):
        head, rules, start = [""], [], 2
        for g, n in spans:
            head.append(f"\\multicolumn{{{n}}}{{c}}{{{latex_escape(g)}}}" if n > 1 else latex_escape(g))
            if g:
                rules.append(f"\\cmidrule(lr){{{start}-{start + n - 1}}}")
            start += n
        lines.append(" & ".join(head) + r" \\")
        lines.append(" ".join(rules))
    lines.append(" & ".join([latex_escape(table.row_header)] + [latex_escape(c.header) for c in cols]) + r" \\")
    lines.append(r"\midrule")
    prev_group = None
    for r in table.rows:
        if prev_group is not None and r.group != prev_group:
            lines.append(r"\midrule")
        prev_group = r.group
        cells = []
        for c in cols:
            cell = r.cells.get(c.key, Cell())
            s = latex_escape(_fmt(c, cell.value))
            if _is_best(table, c, cell.value):
                s = f"\\textbf{{{s}}}"
            if _sig(cell):
                s += r"$^\dagger$"
            cells.append(s)
        lines.append(" & ".join([latex_escape(r.label)] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(r"\par\smallskip\footnotesize")
        lines.append(" ".join(latex_escape(n) for n in table.notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def significance_csv(tables: Sequence[Table]) -> str:
    keys = ["table", "row", "column", "metric", "model", "baseline", "score", "baseline_score", "delta",
            "delta_ci_lo", "delta_ci_hi", "p_bootstrap", "p_koehn", "p_matched_pairs", "n_utterances", "n_testsets"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for t in tables:
        for e in t.significance:
            w.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in e.items()})
    return buf.getvalue()


def table_json(table: Table) -> dict[str, Any]:
    return {
        "name": table.name, "title": table.title, "notes": table.notes,
        "columns": [{"key": c.key, "header": c.header, "group": c.group, "metric": c.metric, "kind": c.kind,
                     "testset": c.testset, "parts": c.parts, "shown": c.show} for c in table.columns],
        "rows": [{"label": r.label, "model": r.model, "group": r.group,
                  "cells": {k: {"value": None if math.isnan(x.value) else x.value, "ci95": x.ci, "p": x.p,
                                "model": x.model} for k, x in r.cells.items()}} for r in table.rows],
    }
