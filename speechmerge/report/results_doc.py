"""``docs/results.md``: the default run's result tables, regenerated from a run's reports
(``make results``).

The file holds the tables between two marker lines::

    <!-- speechmerge:tables:begin -->
    ...
    <!-- speechmerge:tables:end -->

``results_tables(report_root, experiments)`` renders, per experiment, the context table
(zero-shot at 30 s and at the crop, θ₀), the main table, the dev selection of the merging
hyperparameters, the claims table and the task-vector cosines from
``{report_root}/{experiment}/`` (``FILES``; a missing file is skipped), and ``update_marked``
replaces what lies between the markers. Nothing outside them changes; a file without both
markers, or with them in the wrong order, is an error naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

BEGIN = "<!-- speechmerge:tables:begin -->"
END = "<!-- speechmerge:tables:end -->"
FILES = ("context.md", "table.md", "merge_selection.md", "claims.md", "taskvector_cosines.md")


def results_tables(report_root: str | os.PathLike, experiments: Sequence[str]) -> str:
    root = Path(report_root)
    blocks = []
    for exp in experiments:
        d = root / exp
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no report for experiment {exp!r} (run the workflow first)")
        parts = [f"### `{exp}`", ""]
        for name in FILES:
            f = d / name
            if f.exists():
                parts += [f.read_text().strip(), ""]
        blocks.append("\n".join(parts).rstrip())
    return "\n\n".join(blocks) + "\n"


def update_marked(path: str | os.PathLike, body: str) -> bool:
    """Replace the text between the markers of ``path`` by ``body``; True if it changed."""
    path = Path(path)
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


def config_experiments(config_path: str | os.PathLike) -> list[str]:
    """The enabled experiments of a config file, in its order."""
    from speechmerge.config import load_config

    experiments = load_config(config_path).get("experiments") or {}
    return [name for name, exp in experiments.items() if (exp or {}).get("enabled", True)]


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="rewrite docs/results.md's tables from a run's reports")
    p.add_argument("--reports", default="results/report", help="the run's report root")
    p.add_argument("--out", default="docs/results.md")
    p.add_argument("--config", default="config.yaml", help="the run's config: its experiments, in order")
    p.add_argument("--experiments", nargs="+", help="these experiments instead of the config's")
    args = p.parse_args(argv)
    experiments = args.experiments or config_experiments(args.config)
    changed = update_marked(args.out, results_tables(args.reports, experiments))
    print(f"{args.out}: {'updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
