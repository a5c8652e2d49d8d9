"""The report's tables, built from a report spec (``speechmerge.plan``) and a ``ResultStore``:
the main table in the layout of the experiment's kind, its extra tables (the layout's, e.g.
``per_testset`` of ``domains``), one table per hyperparameter sweep and the forgetting table of sequential
fine-tuning. Cells are filled by ``speechmerge.report.filling``; the best value of each column
is bold and significant differences carry a dagger (``speechmerge.report.render``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from speechmerge import names as N
from speechmerge.report.context import build_context_table
from speechmerge.report.filling import fill_table
from speechmerge.report.layouts import find_row, layout
from speechmerge.report.scores import ResultStore
from speechmerge.report.table import ALPHA, GREEK, Row, Table, base_column


def build_tables(spec: Mapping, store: ResultStore, *, params: Mapping | None = None) -> dict[str, Table]:
    """Every table of a report, by name, in the order the report lists them."""
    lay = layout(spec)
    tables = {"table": build_main_table(spec, store, params=params)}
    for t in lay.extra_tables(spec, store):
        tables[t.name] = t
    ctx = build_context_table(spec, store)
    if ctx is not None:
        tables[ctx.name] = ctx
    for t in build_sweep_tables(spec, store):
        tables[t.name] = t
    fg = build_forgetting_table(spec, store) if lay.has_forgetting else None
    if fg is not None:
        tables["forgetting"] = fg
    return tables


def rows_of(spec_rows: Sequence[Mapping]) -> list[Row]:
    return [
        Row(label=r.get("label", r["model"]), model=r["model"], group=r.get("group", ""), spec=dict(r))
        for r in spec_rows
    ]


def n_seeds(spec: Mapping) -> int:
    """The number of training seeds of a report spec."""
    return len(spec.get("seeds") or [spec.get("seed", 0)])


def significance_note(baseline: Mapping | None, n_boot: int, seeds: int = 1) -> list[str]:
    if baseline is None:
        return []
    over = "utterances" if seeds <= 1 else f"the {seeds} training seeds (paired by seed) and utterances"
    return [
        f"† differs from {baseline.get('label', baseline['model'])} at p < {ALPHA:g} (paired bootstrap over "
        f"{over}, {n_boot} resamples, two-sided; stratified by test set for averages); "
        "p-values in significance.csv."
    ]


def seeds_note(spec: Mapping) -> list[str]:
    """What a cell is with several training seeds (nothing with one)."""
    seeds = spec.get("seeds") or []
    if len(seeds) <= 1:
        return []
    return [
        f"Trained models and merges: mean ± standard deviation over {len(seeds)} training seeds "
        f"({', '.join(str(s) for s in seeds)}); zero-shot and θ₀ are one model. 95 % intervals in the CSV "
        "resample the seeds and the test utterances (two-level bootstrap); NP is computed from the means."
    ]


def baseline_row(spec: Mapping) -> dict | None:
    return find_row(spec, spec.get("baseline_for_significance"), "baseline_for_significance")


def build_main_table(spec: Mapping, store: ResultStore, *, params: Mapping[str, Mapping] | None = None) -> Table:
    """The paper's main table of the experiment's kind."""
    lay = layout(spec)
    reference, baseline = lay.reference(spec), baseline_row(spec)
    table = Table(
        name="table",
        title=f"{spec['experiment']}: {lay.title}",
        columns=lay.main_columns(spec, store),
        rows=rows_of(spec["rows"]),
    )
    fill_table(table, store, reference=reference, baseline=baseline, params=params)
    table.notes = main_notes(spec, table, reference, baseline, store)
    return table


def main_notes(
    spec: Mapping, table: Table, reference: Mapping | None, baseline: Mapping | None, store: ResultStore
) -> list[str]:
    notes = []
    kinds = {c.metric for c in table.columns if c.kind in ("base", "mean")}
    if kinds & {"wer", "cer"}:
        notes.append(
            "WER/CER in % after Whisper's text normalisers (corpus level: total edits / total reference "
            "words or characters); lower is better."
        )
    if "bleu" in kinds:
        sigs = sorted({r.get("bleu_signature") for r in store.scores.values() if r.get("bleu_signature")})
        notes.append(
            "BLEU: sacrebleu corpus BLEU on detokenised output"
            + (f" ({'; '.join(sigs)})" if sigs else "")
            + "; higher is better."
        )
    notes += layout(spec).notes(spec, reference)
    if any(r.spec.get("per_subset") or r.spec.get("per_testset") for r in table.rows):
        notes.append("Composite rows (experts) take each column from the model trained on that subset.")
    notes += seeds_note(spec)
    resampled = "utterances" if n_seeds(spec) <= 1 else "seeds and utterances"
    notes.append(f"Bold: best in column. 95 % bootstrap intervals ({resampled} resampled, percentile) in table.csv.")
    notes += significance_note(baseline, store.n_boot, n_seeds(spec))
    return notes


def build_sweep_tables(spec: Mapping, store: ResultStore) -> list[Table]:
    """One table per hyperparameter sweep: rows = sweep points, columns = the summary columns."""
    lay = layout(spec)
    out = []
    for sw in spec.get("sweeps", []):
        rows = [
            {
                "model": p["model"],
                "label": f"{sw['param']} = {p['value']}" + (" (default)" if p.get("default") else ""),
                "group": "sweep",
                "value": p["value"],
                **({"seeds": p["seeds"]} if "seeds" in p else {}),
            }
            for p in sw["points"]
        ]
        label = sw.get("label") or next(
            (r.get("label") for r in spec["rows"] if r.get("method") == sw["method"]), sw["method"]
        )
        table = Table(
            name=N.sweep_table_name(sw["method"], sw["param"]),
            title=f"{spec['experiment']}: {label}, test-set sweep of {GREEK.get(sw['param'], sw['param'])}",
            columns=lay.sweep_columns(spec, store),
            rows=rows_of(rows),
            row_header="Setting",
        )
        fill_table(table, store, reference=lay.reference(spec))
        table.notes = [
            f"Merging method {sw['method']} with {sw['param']} varied (other hyperparameters at their "
            "defaults). Bold: best in column."
        ] + seeds_note(spec)
        out.append(table)
    return out


def build_forgetting_table(spec: Mapping, store: ResultStore) -> Table | None:
    """Sequential fine-tuning: error rate on every subset after each stage."""
    stages = spec.get("sequential") or []
    if not stages:
        return None
    cols = [base_column(store, s, "transcribe", "Error rate (%) ↓") for s in spec["subsets"]]
    rows = [
        {
            "model": st["model"],
            "label": f"stage {k}: +{st['subset']}",
            "group": "sequential",
            "subset": st["subset"],
            "stage": k,
            **({"seeds": st["seeds"]} if "seeds" in st else {}),
        }
        for k, st in enumerate(stages, 1)
    ]
    start = N.ADAPTED if any(r["model"] == N.ADAPTED for r in spec["rows"]) else N.ZEROSHOT
    if any(r["model"] == start for r in spec["rows"]):
        label = "stage 0: θ₀ (the start)" if start == N.ADAPTED else "stage 0: zero-shot"
        rows.insert(0, {"model": start, "label": label, "group": "sequential", "stage": 0})
    table = Table(
        name="forgetting",
        title=f"{spec['experiment']}: sequential fine-tuning, error rate after each stage",
        columns=cols,
        rows=rows_of(rows),
        row_header="Stage",
    )
    fill_table(table, store)
    table.notes = [
        "Stage k fine-tunes the model of stage k−1 on one more subset (named in the row); stage 0 is "
        "the zero-shot model. Rising values in earlier columns = forgetting."
    ] + seeds_note(spec)
    return table
