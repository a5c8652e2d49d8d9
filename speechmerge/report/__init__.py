"""Per-experiment report: tables (CSV, Markdown, LaTeX) and figures (PNG, PDF) in one directory.

Modules, by job:

* ``scores``   the score store (score JSONs and hypothesis JSONLs by model and test set);
* ``table``    the table model (columns, cells, rows) and column constructors;
* ``filling``  values, bootstrap intervals, normalised performance, paired significance;
* ``layouts``  the three papers' layouts, one object per experiment kind;
* ``tables``   the tables of a report (main, per test set, sweeps, forgetting);
* ``render``   CSV, Markdown, LaTeX, significance CSV, JSON;
* ``training`` the fine-tuned-against-zero-shot table; ``figures`` the figures;
* ``captions`` the caption of every file; ``writer`` ``write_report``, the ``report`` rule's call.
"""

from speechmerge.report.captions import report_captions
from speechmerge.report.writer import write_report

__all__ = ["report_captions", "write_report"]
