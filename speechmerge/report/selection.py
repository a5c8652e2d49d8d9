"""The dev-split selection of merging hyperparameters in the report: every grid point's dev
score (``merge_selection.{csv,md}``), the chosen values under the main table, and the data of
the dev-curve figure (``figures.selection_plot``).

Input: the merge info of each dev-selected variant (``results/merged/{experiment}/{variant}.json``,
written by ``speechmerge.evaluation.selection.select_merge``), whose ``selection`` holds the grid,
the metric, the curve and the chosen point.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from speechmerge.names import format_value, parse_seeded
from speechmerge.utils import read_json

METRIC_LABELS = {
    "np": "dev NP (experts = 100)",
    "mean_error": "dev mean WER/CER",
    "mean_accuracy": "dev mean accuracy (NP undefined)",
}
PARAM_SYMBOLS = {"scaling": "λ", "beta": "β", "keep_fraction": "k", "drop_rate": "p"}


def read_selections(paths: Sequence[str | Path]) -> list[dict]:
    """The ``selection`` of every merge info, with its ``variant`` and ``method``; a file without
    one is an error naming it."""
    out = []
    for p in paths:
        info = read_json(p)
        sel = info.get("selection")
        if not sel or "curve" not in sel or "chosen" not in sel:
            raise ValueError(f"{p}: merge info has no dev selection (selection.curve / selection.chosen)")
        out.append({**sel, "variant": info.get("variant") or Path(p).stem, "method": info["method"]})
    return out


def selection_label(sel: Mapping, labels: Mapping[str, str]) -> str:
    """The method's row label, with the training seed of its variant when the run has several."""
    label = labels.get(sel["method"], sel["method"])
    seed = parse_seeded(str(sel.get("variant", "")))[1]
    return label if seed is None else f"{label} (seed {seed})"


def point_label(hparams: Mapping[str, Any]) -> str:
    """``{"scaling": 0.6}`` -> ``"λ=0.6"``; several parameters joined by ", "."""
    return ", ".join(f"{PARAM_SYMBOLS.get(k, k)}={format_value(v)}" for k, v in hparams.items())


def selection_rows(selections: Sequence[Mapping], labels: Mapping[str, str]) -> list[dict]:
    """One row per grid point: method label, point, metric, dev score, whether chosen."""
    rows = []
    for sel in selections:
        for k, point in enumerate(sel["curve"]):
            rows.append(
                {
                    "method": selection_label(sel, labels),
                    "variant": sel["variant"],
                    "point": point_label(point["hparams"]),
                    "hparams": point["hparams"],
                    "metric": sel["metric"],
                    "dev_score": point["score"],
                    "chosen": k == sel["chosen_index"],
                    "paper_default": k == sel.get("default_index"),
                }
            )
    return rows


def to_csv(rows: Sequence[Mapping]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "variant", "point", "hparams", "metric", "dev_score", "chosen", "paper_default"])
    for r in rows:
        w.writerow(
            [r["method"], r["variant"], r["point"], json.dumps(r["hparams"], sort_keys=True), r["metric"],
             f"{r['dev_score']:.4f}", "yes" if r["chosen"] else "", "yes" if r.get("paper_default") else ""]
        )  # fmt: skip
    return buf.getvalue()


def to_markdown(rows: Sequence[Mapping], title: str) -> str:
    lines = [
        f"**{title}**",
        "",
        "| Method | Grid point | Metric | Dev score | Chosen |",
        "|---|---|---|---:|:---:|",
    ]
    for r in rows:
        point = r["point"] + (" (paper default)" if r.get("paper_default") else "")
        lines.append(
            f"| {r['method']} | {point} | {METRIC_LABELS.get(r['metric'], r['metric'])} | "
            f"{r['dev_score']:.2f} | {'✓' if r['chosen'] else ''} |"
        )
    lines += ["", "Each point was merged and decoded on the dev split only; the chosen point is the method's row."]
    return "\n".join(lines) + "\n"


def chosen_note(selections: Sequence[Mapping], labels: Mapping[str, str]) -> str:
    """The line under the main table: each dev-selected method with the values it got."""
    if not selections:
        return ""
    metric = METRIC_LABELS.get(selections[0]["metric"], selections[0]["metric"])
    parts = [f"{selection_label(s, labels)} {point_label(s['chosen'])}" for s in selections]
    return f"Hyperparameters chosen on the dev split by {metric}: " + "; ".join(parts) + "."
