"""The caption of every file a report can hold: what ``snakemake --report`` shows
(rules/report.smk) and what the report's README lists."""

from __future__ import annotations

from typing import Mapping

from speechmerge import names as N
from speechmerge.report.layouts import layout


def report_captions(spec: Mapping) -> dict[str, str]:
    """Caption of every figure (``.png``) and main table (``.csv``) the report of ``spec`` can
    hold, by file name."""
    exp, lay = spec["experiment"], layout(spec)
    baseline = spec.get("baseline_for_significance")
    caps = {
        "table.csv": f"{exp}: the paper's main table — {lay.caption_metric} per test set and method, averages"
        + (", normalised performance" if spec.get("normalise_to") else "")
        + (", trainable parameters" if lay.counts_parameters else "")
        + "; 95 % bootstrap intervals and paired-bootstrap p-values against "
        f"{baseline} in the extra columns.",
        "training.csv": f"{exp}: each fine-tuned model on its own test sets against the model it started from, with the dev "
        "loss of the selected step, training time and trainable parameters.",
        "claims.csv": f"{exp}: each headline claim of the paper tested on these results — effect size, "
        "95 % bootstrap CI, p-value and verdict (reproduced, contradicted, inconclusive, not run); "
        "docs/claims.md.",
        "significance.csv": f"{exp}: paired bootstrap tests of every cell against "
        f"{baseline} (and matched-pairs p for error rates).",
        "methods.png": f"{exp}: every method on the summary columns, with 95 % bootstrap intervals.",
        "taskvector_cosine.png": f"{exp}: cosine similarity between the experts' task vectors (all weights).",
        "taskvector_spectra.png": f"{exp}: singular-value spectra of representative task-vector matrices"
        + (
            ", with what BoostedTSV-M's boosting makes of them"
            if any(r.get("method") == "boosted_tsv_m" for r in spec["rows"])
            else ""
        )
        + ".",
    }
    if any(r.get("model") in N.START_MODELS for r in spec.get("rows", [])):
        caps["context.csv"] = (
            f"{exp}: zero-shot at Whisper's native 30 s context and at the experiments' crop, the "
            "context-adapted base θ₀ and the experts, on every test set."
        )
    if len(spec.get("experts") or {}) >= 2:
        caps["taskvector_cosines.csv"] = (
            f"{exp}: cosine of every pair of experts' task vectors, taken from the imported base and "
            "from θ₀, over all weights, the encoder and the decoder."
        )
    if spec.get("sequential"):
        caps["forgetting.csv"] = f"{exp}: error rate per subset after each stage of sequential fine-tuning."
        caps["forgetting.png"] = f"{exp}: forgetting — error rate per subset after each sequential fine-tuning stage."
    if any(r.get("selected_on") for r in spec.get("rows", [])):
        caps["merge_selection.csv"] = (
            f"{exp}: every grid point of each dev-selected merging method with its dev score; the chosen "
            "point is the method's row in the main table (test sets take no part)."
        )
        caps["merge_selection.png"] = (
            f"{exp}: dev score of each merging method at every point of its grid, the chosen point starred."
        )
    labels = {r.get("model"): r.get("label", r.get("model")) for r in spec.get("rows", [])}
    baseline = spec.get("baseline_for_significance")
    for sw in spec.get("sweeps", []):
        name, param = N.sweep_table_name(sw["method"], sw["param"]), sw["param"]
        method = labels.get(N.merge_model(sw["method"]), sw.get("label", sw["method"]))
        caps[f"{name}.csv"] = (
            f"{exp}: test-set sweep of {sw['method']} with {param} over {[p['value'] for p in sw['points']]} "
            "(decoded on the test set; no row is chosen from it)."
        )
        caps[f"{name}.png"] = (
            f"{exp}: test-set sweep of {method} against {param}, one panel per summary column: the merged model "
            f"at each swept value and at its default value (marked “default” on the axis), "
            f"with the 95 % bootstrap band"
            + (f"; dashed line: {labels.get(baseline, baseline)}" if baseline else "")
            + ". Where the default merge's value is unknown it is a dotted line instead."
        )
    caps.update(lay.extra_captions(exp))
    return caps
