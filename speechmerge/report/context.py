"""The context table: where the experiments start from, per test set, and what the experts share.

``context`` has one column per test set (WER/CER or BLEU, with averages) and one row per start
model (``speechmerge.plan.start_rows``): zero-shot at Whisper's native 30 s context, zero-shot at
the experiments' crop, the context-adapted base θ₀, and the individual experts for comparison.
Its notes say which context each row used. ``taskvector_cosines`` summarises the pairwise cosines
of the experts' task vectors taken from the imported base and from θ₀
(``speechmerge.training.cosines``): how much of what the experts learn is shared, before and after
θ₀ takes it out.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Mapping

from speechmerge import names as N
from speechmerge.report.filling import fill_table
from speechmerge.report.render import md_escape
from speechmerge.report.scores import ResultStore
from speechmerge.report.table import Column, Row, Table, base_column, mean_column

ORIGINS = (("from_base", "from the imported base (θ_i − θ_base)"), ("from_theta0", "from θ₀ (θ_i − θ₀)"))
PARTS = (("all", "all weights"), ("encoder", "encoder"), ("decoder", "decoder"))


def _testsets(spec: Mapping, store: ResultStore) -> list[str]:
    """The test sets every start row was evaluated on, in the order of the zero-shot scores."""
    first = next((r["model"] for r in spec["rows"] if r["model"] in N.START_MODELS), N.ZEROSHOT)
    return [t for (m, t) in store.scores if m == first]


def build_context_table(spec: Mapping, store: ResultStore) -> Table | None:
    """Start models and experts on every test set; None without a start row scored."""
    starts = [r for r in spec["rows"] if r["model"] in N.START_MODELS]
    testsets = _testsets(spec, store)
    if not starts or not testsets:
        return None
    columns: list[Column] = []
    by_metric: dict[str, list[Column]] = {}
    for t in testsets:
        subset, task = N.split_testset(t)
        c = base_column(store, subset, task, group="per test set", header=t)
        columns.append(c)
        by_metric.setdefault(c.metric, []).append(c)
    for metric, cols in by_metric.items():
        if len(cols) > 1:
            columns.append(mean_column(f"{metric}:avg", "Avg", "average", cols))
    rows = [
        Row(label=r.get("label", r["model"]), model=r["model"], group=r.get("group", ""), spec=dict(r)) for r in starts
    ]
    experts = next((r for r in spec["rows"] if r["model"] == "experts"), None)
    if experts is not None:
        rows.append(Row(label=experts.get("label", "experts"), model="experts", group="baseline", spec=dict(experts)))
    table = Table(
        name="context",
        title=f"{spec['experiment']}: zero-shot at 30 s and at the crop, the context-adapted base θ₀, and the experts",
        columns=columns,
        rows=rows,
    )
    fill_table(table, store)
    notes = [
        f"{r.label}: evaluated at a {r.spec.get('context_s', '?')} s encoder context"
        + (" (Whisper's native context)." if r.spec.get("context_s") == 30 else ".")
        for r in rows
        if r.model in N.START_MODELS
    ]
    if any(r.model == N.ADAPTED for r in rows):
        notes.append(
            "θ₀ is the base fine-tuned at the crop on synthesised speech of languages no experiment "
            "evaluates; every expert, baseline and PEFT model starts from it, and task vectors are taken from it."
        )
    notes.append("WER/CER in % (lower is better), BLEU (higher is better); 95 % bootstrap intervals in context.csv.")
    table.notes = notes
    return table


def cosine_rows(cosines: Mapping) -> list[dict]:
    """One row per origin x part: mean, min and max of the pairwise cosines."""
    rows = []
    for origin, origin_label in ORIGINS:
        for part, part_label in PARTS:
            s = (cosines.get(origin) or {}).get(part)
            if not s:
                continue
            rows.append(
                {
                    "origin": origin,
                    "task_vectors": origin_label,
                    "part": part_label,
                    "pairs": len(s.get("pairs", {})),
                    "mean": s["mean"],
                    "min": s["min"],
                    "max": s["max"],
                }
            )
    return rows


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def cosines_markdown(experiment: str, cosines: Mapping) -> str:
    rows = cosine_rows(cosines)
    lines = [
        f"**{experiment}: cosine similarity of the experts' task vectors, from the base and from θ₀**",
        "",
        "| Task vectors | Weights | Pairs | Mean | Min | Max |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {md_escape(r['task_vectors'])} | {r['part']} | {r['pairs']} | {_fmt(r['mean'])} | "
            f"{_fmt(r['min'])} | {_fmt(r['max'])} |"
        )
    shift = cosines.get("with_theta0_shift") or {}
    if shift and not cosines.get("theta0_is_base"):
        lines += [
            "",
            "Cosine of each expert's task vector from the base with θ₀ − θ_base (the part θ₀ already holds): "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in shift.items())
            + ".",
        ]
    if cosines.get("theta0_is_base"):
        lines += ["", "Without a context-adapted base θ₀ is the imported base: both origins are the same."]
    return "\n".join(lines) + "\n"


def cosines_csv(cosines: Mapping) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["origin", "part", "pair", "cosine"])
    for origin, _ in ORIGINS:
        for part, _ in PARTS:
            for pair, v in ((cosines.get(origin) or {}).get(part) or {}).get("pairs", {}).items():
                w.writerow([origin, part, pair, "" if v is None or math.isnan(v) else f"{v:.6f}"])
    for label, v in (cosines.get("with_theta0_shift") or {}).items():
        w.writerow(["from_base_vs_theta0_shift", "all", label, "" if v is None or math.isnan(v) else f"{v:.6f}"])
    return buf.getvalue()
