"""Two runs' reports side by side: ``python -m speechmerge compare-reports A B``.

For every experiment folder both reports have (``results/report/<experiment>/``), it compares

* the main table (``table.csv``): every score cell of every row both have, the difference
  ``B - A``, and whether each run's value lies inside the other run's 95 % interval;
* the claims (``claims.csv``, paper kinds): each claim's verdict and effect in both runs.

This is how a run on another machine, with other kernels or another ``precision`` is checked
against a reference run: the same machine and settings give identical cells; elsewhere the
cells should move within their intervals, and the verdicts are what to compare.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

CI_SUFFIXES = (":ci_lo", ":ci_hi", ":p_vs_baseline")
KEY_COLUMNS = ("row", "model", "group")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _number(text: str | None) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


@dataclass
class TableComparison:
    experiment: str
    cells: int = 0  # cells with a number in both runs
    identical: int = 0
    within: int = 0  # each run's value inside the other's 95 % interval (cells with intervals)
    with_interval: int = 0
    max_abs_diff: float = 0.0
    largest: list[tuple[float, str, str, float, float]] = field(default_factory=list)  # |d|, row, column, a, b
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)


def compare_tables(experiment: str, a_path: Path, b_path: Path, *, top: int = 5) -> TableComparison:
    """Cell by cell comparison of two ``table.csv`` files (rows matched by their ``row`` label)."""
    a_rows = {r["row"]: r for r in _read_csv(a_path)}
    b_rows = {r["row"]: r for r in _read_csv(b_path)}
    out = TableComparison(
        experiment, only_a=sorted(set(a_rows) - set(b_rows)), only_b=sorted(set(b_rows) - set(a_rows))
    )
    diffs = []
    for row in [r for r in a_rows if r in b_rows]:
        a, b = a_rows[row], b_rows[row]
        for col in a:
            if col in KEY_COLUMNS or col.endswith(CI_SUFFIXES) or col not in b:
                continue
            va, vb = _number(a[col]), _number(b[col])
            if va is None or vb is None:
                continue
            out.cells += 1
            d = vb - va
            if d == 0:
                out.identical += 1
            out.max_abs_diff = max(out.max_abs_diff, abs(d))
            diffs.append((abs(d), row, col, va, vb))
            lo_a, hi_a = _number(a.get(col + ":ci_lo")), _number(a.get(col + ":ci_hi"))
            lo_b, hi_b = _number(b.get(col + ":ci_lo")), _number(b.get(col + ":ci_hi"))
            if None not in (lo_a, hi_a, lo_b, hi_b):
                out.with_interval += 1
                if lo_a <= vb <= hi_a and lo_b <= va <= hi_b:
                    out.within += 1
    out.largest = sorted(diffs, reverse=True)[:top]
    return out


def compare_claims(a_path: Path, b_path: Path) -> list[dict]:
    """Per claim id (in A's order, then B's own): verdict and effect in each run."""
    a = {r["id"]: r for r in _read_csv(a_path)}
    b = {r["id"]: r for r in _read_csv(b_path)}
    rows = []
    for cid in list(a) + [c for c in b if c not in a]:
        ra, rb = a.get(cid, {}), b.get(cid, {})
        rows.append(
            {
                "id": cid,
                "verdict_a": ra.get("verdict", "—"),
                "verdict_b": rb.get("verdict", "—"),
                "effect_a": _number(ra.get("effect")),
                "effect_b": _number(rb.get("effect")),
                "same": ra.get("verdict") == rb.get("verdict"),
            }
        )
    return rows


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def compare_reports(a: str | Path, b: str | Path, *, top: int = 5, labels: tuple[str, str] | None = None) -> str:
    """The Markdown comparison of two report folders (``results/report``): per experiment the
    ``top`` largest cell differences (0: every cell that differs) and every claim's verdict.
    ``labels`` name the two runs in the text (default: their paths)."""
    a, b = Path(a), Path(b)
    name_a, name_b = labels or (str(a), str(b))
    for p in (a, b):
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: not a report folder (expected results/report)")
    experiments = sorted(
        d.name
        for d in a.iterdir()
        if d.is_dir() and (d / "table.csv").is_file() and (b / d.name / "table.csv").is_file()
    )
    if not experiments:
        raise ValueError(f"{a} and {b} have no experiment with a table.csv in common")
    lines = [f"# {name_b} (B) against {name_a} (A)", ""]
    all_claims, n_cells, n_within, n_interval, n_same = [], 0, 0, 0, 0
    for exp in experiments:
        t = compare_tables(exp, a / exp / "table.csv", b / exp / "table.csv", top=top or 10**9)
        n_cells += t.cells
        n_within += t.within
        n_interval += t.with_interval
        n_same += t.identical
        lines += [
            f"## {exp}",
            "",
            f"Main table: {t.cells} cells in both runs, {t.identical} identical, largest difference "
            f"{t.max_abs_diff:.2f}; {t.within} of {t.with_interval} cells with intervals have each run's value "
            "inside the other's 95 % interval.",
        ]
        if t.only_a or t.only_b:
            lines.append(f"Rows only in A: {t.only_a or 'none'}; only in B: {t.only_b or 'none'}.")
        if t.largest and t.max_abs_diff > 0:
            lines += ["", "| row | cell | A | B | B − A |", "|---|---|---:|---:|---:|"]
            lines += [f"| {r} | {c} | {va:.2f} | {vb:.2f} | {vb - va:+.2f} |" for d, r, c, va, vb in t.largest if d > 0]
        claims_a, claims_b = a / exp / "claims.csv", b / exp / "claims.csv"
        if claims_a.is_file() and claims_b.is_file():
            claims = compare_claims(claims_a, claims_b)
            all_claims += claims
            lines += ["", "| claim | verdict A | verdict B | effect A | effect B |", "|---|---|---|---:|---:|"]
            lines += [
                f"| {c['id']} | {c['verdict_a']} | {c['verdict_b']}{'' if c['same'] else ' (changed)'} | "
                f"{_fmt(c['effect_a'])} | {_fmt(c['effect_b'])} |"
                for c in claims
            ]
        lines.append("")
    changed = [c["id"] for c in all_claims if not c["same"]]
    lines += [
        "## Summary",
        "",
        f"{n_cells} table cells compared, {n_same} identical, {n_within} of {n_interval} within each other's "
        f"95 % intervals; {len(all_claims) - len(changed)} of {len(all_claims)} claim verdicts agree"
        + (f" (changed: {', '.join(changed)})." if changed else "."),
        "",
    ]
    return "\n".join(lines)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare-reports",
        help="two runs' reports side by side: table cells and claim verdicts",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("a", help="the reference run's report folder (results/report)")
    p.add_argument("b", help="the other run's report folder")
    p.add_argument("--top", type=int, default=5, help="largest cell differences listed per experiment (0: all)")
    p.add_argument("--labels", nargs=2, metavar=("A", "B"), help="names of the two runs in the text")
    p.add_argument("--out", help="write the Markdown here instead of printing it")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    text = compare_reports(args.a, args.b, top=args.top, labels=tuple(args.labels) if args.labels else None)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text)
    return 0
