"""Renderers of a filled table: CSV (every column, intervals, p-values), Markdown, LaTeX, the
significance CSV and the JSON of ``summary.json``."""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Sequence

from speechmerge.report.table import ALPHA, METRIC_LABEL, Cell, Column, Table


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


def _sd(c: Column, cell: Cell) -> str:
    """`` ± sd`` of a cell of several training seeds (empty with one seed)."""
    if cell.sd is None or math.isnan(cell.sd):
        return ""
    return f" ± {_fmt(c, cell.sd)}"


def has_seeds(table: Table) -> bool:
    """Whether any cell of the table is a mean over several training seeds."""
    return any(cell.sd is not None for r in table.rows for cell in r.cells.values())


def to_csv(table: Table) -> str:
    """All columns (shown or not), with 95 % intervals and p-values vs the baseline."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    seeds = has_seeds(table)
    header = ["row", "model", "group"]
    for c in table.columns:
        header += [c.key]
        if c.kind in ("base", "mean"):
            header += [f"{c.key}:sd"] if seeds else []
            header += [f"{c.key}:ci_lo", f"{c.key}:ci_hi", f"{c.key}:p_vs_baseline"]
    w.writerow(header)
    for r in table.rows:
        line = [r.label, r.model, r.group]
        for c in table.columns:
            cell = r.cells.get(c.key, Cell())
            line.append("" if math.isnan(cell.value) else repr(round(cell.value, 6)))
            if c.kind in ("base", "mean"):
                if seeds:
                    line.append("" if cell.sd is None or math.isnan(cell.sd) else repr(round(cell.sd, 6)))
                lo, hi = cell.ci if cell.ci else ("", "")
                line += [
                    "" if lo == "" else repr(round(lo, 6)),
                    "" if hi == "" else repr(round(hi, 6)),
                    "" if cell.p is None else repr(round(cell.p, 6)),
                ]
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
            cells.append(s + _sd(c, cell))
        lines.append(f"| {md_escape(r.label)} | " + " | ".join(cells) + " |")
    if table.notes:
        lines += [""] + [f"* {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_UNICODE = {
    "↓": r"$\downarrow$",
    "↑": r"$\uparrow$",
    "→": r"$\rightarrow$",
    "λ": r"$\lambda$",
    "β": r"$\beta$",
    "×": r"$\times$",
    "−": "--",
    "–": "--",
    "—": "---",
    "†": r"$^\dagger$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "±": r"$\pm$",
}


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
    lines = [
        "% generated by speechmerge.report.tables (needs \\usepackage{booktabs})",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        f"\\caption{{{latex_escape(table.title)}}}",
        f"\\label{{tab:{label or table.name}}}",
        r"\begin{tabular}{l" + "r" * len(cols) + "}",
        r"\toprule",
    ]
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
            cells.append(s + latex_escape(_sd(c, cell)))
        lines.append(" & ".join([latex_escape(r.label)] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(r"\par\smallskip\footnotesize")
        lines.append(" ".join(latex_escape(n) for n in table.notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def significance_csv(tables: Sequence[Table]) -> str:
    keys = [
        "table",
        "row",
        "column",
        "metric",
        "model",
        "baseline",
        "score",
        "baseline_score",
        "delta",
        "delta_ci_lo",
        "delta_ci_hi",
        "p_bootstrap",
        "p_koehn",
        "p_matched_pairs",
        "n_utterances",
        "n_testsets",
    ]
    if any("n_seeds" in e for t in tables for e in t.significance):
        keys.append("n_seeds")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for t in tables:
        for e in t.significance:
            w.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in e.items()})
    return buf.getvalue()


def table_json(table: Table) -> dict[str, Any]:
    return {
        "name": table.name,
        "title": table.title,
        "notes": table.notes,
        "columns": [
            {
                "key": c.key,
                "header": c.header,
                "group": c.group,
                "metric": c.metric,
                "kind": c.kind,
                "testset": c.testset,
                "parts": c.parts,
                "shown": c.show,
            }
            for c in table.columns
        ],
        "rows": [
            {
                "label": r.label,
                "model": r.model,
                "group": r.group,
                "cells": {k: _cell_json(x) for k, x in r.cells.items()},
            }
            for r in table.rows
        ],
    }


def _cell_json(x: Cell) -> dict[str, Any]:
    out = {"value": None if math.isnan(x.value) else x.value, "ci95": x.ci, "p": x.p, "model": x.model}
    if x.models is not None:
        out.update({"sd": x.sd, "seed_values": x.seed_values, "models": x.models})
    elif x.sd is not None:
        out.update({"sd": x.sd, "seed_values": x.seed_values})
    return out
