"""What a report layout is: the base class of each experiment kind's layout (the kinds'
modules in ``speechmerge.experiments`` define them) and ``layout(spec)``, which finds a report
spec's.

A layout says how the report of one kind of experiment looks: the columns of its main table and
of its sweep tables, the title, the reference row of normalised performance, its notes, its
extra tables and captions, and whether its error rates are CER throughout (``peft``) or its main
table counts trainable parameters. ``layout(spec)`` picks the layout of a report spec; the table
builders (``speechmerge.report.tables``) and the report writer ask it instead of switching on
``spec["kind"]``.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Mapping, Sequence

from speechmerge.report.scores import ResultStore
from speechmerge.report.table import Column, Table

log = logging.getLogger(__name__)


def find_row(spec: Mapping, model: str | None, what: str) -> dict | None:
    """The spec row of ``model`` (a copy), or None (with a warning if a model was named)."""
    if not model:
        return None
    for r in spec["rows"]:
        if r["model"] == model:
            return dict(r)
    log.warning("report spec: %s row %r is not among the rows; ignored", what, model)
    return None


class Layout:
    """The layout of one experiment kind (subclasses below)."""

    kind: ClassVar[str] = ""
    title: ClassVar[str] = ""  # main table title after "{experiment}: "
    caption_metric: ClassVar[str] = ""  # what the main table measures, for captions
    metric_override: ClassVar[str | None] = None  # the error metric of every ASR column
    counts_parameters: ClassVar[bool] = False  # main table has trainable-parameter columns
    has_forgetting: ClassVar[bool] = True  # sequential stages get a forgetting table

    def main_columns(self, spec: Mapping, store: ResultStore) -> list[Column]:
        raise NotImplementedError

    def sweep_columns(self, spec: Mapping, store: ResultStore) -> list[Column]:
        """The summary columns of the main table (means, NP), the per-test-set ones hidden."""
        cols = self.main_columns(spec, store)
        for c in cols:
            c.show = c.kind != "base"
        return cols

    def reference(self, spec: Mapping) -> dict | None:
        """The row normalised performance is relative to (None: no NP columns)."""
        return None

    def notes(self, spec: Mapping, reference: Mapping | None) -> list[str]:
        """Notes of the main table specific to this kind."""
        return []

    def extra_tables(self, spec: Mapping, store: ResultStore) -> list[Table]:
        """Tables besides the main one, the sweeps and the forgetting table."""
        return []

    def extra_captions(self, experiment: str) -> dict[str, str]:
        return {}


def layout(spec: Mapping) -> Layout:
    """The layout of a report spec's experiment kind (``speechmerge.experiments``)."""
    from speechmerge.experiments import get_kind

    try:
        return get_kind(spec["kind"]).layout
    except KeyError as err:
        raise ValueError(f"report spec: {err.args[0]}") from None


def mean_mixed(key: str, header: str, group: str, parts: Sequence[Column]) -> Column | None:
    """A mean column over error-rate columns that may mix WER and CER (a retention set in a
    language without word spaces is scored by CER); labelled WER unless all parts are CER."""
    if not parts:
        return None
    metrics = {c.metric for c in parts}
    metric = metrics.pop() if len(metrics) == 1 else "wer"
    return Column(key=key, header=header, group=group, metric=metric, kind="mean", parts=[c.key for c in parts])
