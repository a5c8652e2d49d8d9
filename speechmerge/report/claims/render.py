"""The claims table as CSV and Markdown (the verdict right after the claim)."""

from __future__ import annotations

import csv
import io
import math
from typing import Sequence

from speechmerge.report.claims.definitions import CSV_FIELDS, ClaimResult
from speechmerge.report.render import md_escape


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
