"""The README's result tables, regenerated from a run's reports (``make readme-tables``).

The README holds the tables of the default run between two marker lines::

    <!-- speechmerge:tables:begin -->
    ...
    <!-- speechmerge:tables:end -->

``readme_tables(report_root)`` renders, per experiment in report order, the context table (zero-shot
at 30 s and at the crop, θ₀), the main table, the dev selection of the merging hyperparameters,
the claims table and the task-vector cosines from ``{report_root}/{experiment}/`` (``FILES``; a
missing file is skipped), and ``update_readme`` replaces what lies between the markers. Nothing outside them
changes; a README without both markers, or with them in the wrong order, is an error naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

BEGIN = "<!-- speechmerge:tables:begin -->"
END = "<!-- speechmerge:tables:end -->"
FILES = ("context.md", "table.md", "merge_selection.md", "claims.md", "taskvector_cosines.md")


def readme_tables(report_root: str | os.PathLike, experiments: Sequence[str]) -> str:
    root = Path(report_root)
    blocks = []
    for exp in experiments:
        d = root / exp
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no report for experiment {exp!r} (run the workflow first)")
        parts = [f"#### `{exp}`", ""]
        for name in FILES:
            f = d / name
            if f.exists():
                parts += [f.read_text().strip(), ""]
        blocks.append("\n".join(parts).rstrip())
    return "\n\n".join(blocks) + "\n"


def update_readme(readme: str | os.PathLike, body: str) -> bool:
    """Replace the text between the markers of ``readme`` by ``body``; True if it changed."""
    path = Path(readme)
    text = path.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"{path}: needs the lines {BEGIN} and {END}, in this order")
    new = text[: start + len(BEGIN)] + "\n\n" + body.strip() + "\n\n" + text[end:]
    if new == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="rewrite the README's result tables from a run's reports")
    p.add_argument("--reports", default="results/report", help="the run's report root")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--experiments", nargs="+", default=["multilingual", "domains", "peft"])
    args = p.parse_args(argv)
    changed = update_readme(args.readme, readme_tables(args.reports, args.experiments))
    print(f"{args.readme}: {'updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
