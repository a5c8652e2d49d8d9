"""The table model: columns, cells, rows and tables, and the column constructors.

A table is a list of rows (models, from the report spec) by a list of columns:

* **base** columns: one test set (``{subset}-{task}``) and its metric: WER (CER for languages
  without word spaces, and throughout the ``peft`` experiment) for transcription, BLEU for
  translation;
* **mean** columns: the unweighted mean of several base columns (e.g. the average WER over
  languages);
* **np** columns: normalised performance (``speechmerge.report.filling``);
* **params** / **params_pct** columns: trainable parameters from ``train_info.json``.

Cells are filled by ``speechmerge.report.filling``; the experiment kinds' layouts are in
``speechmerge.report.layouts``; renderers in ``speechmerge.report.render``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from speechmerge import names as N
from speechmerge.evaluation.corpus_metrics import METRICS, get_metric
from speechmerge.report.scores import ResultStore

ALPHA = 0.05  # significance level of the daggers
GREEK = {"beta": "β", "lambda": "λ", "alpha": "α"}
# the corpus metrics' labels (evaluation.corpus_metrics) and the table's derived quantities
METRIC_LABEL = {name: m.label for name, m in METRICS.items()} | {
    "np": "NP",
    "params": "Params",
    "params_pct": "Params %",
}


@dataclass
class Column:
    key: str
    header: str
    group: str
    metric: str
    kind: str  # base | mean | np | params | params_pct
    testset: str | None = None
    subset: str | None = None
    parts: list[str] = field(default_factory=list)
    show: bool = True

    @property
    def higher_is_better(self) -> bool | None:
        if self.kind in ("params", "params_pct"):
            return None
        return self.metric == "np" or get_metric(self.metric).higher_is_better


@dataclass
class Cell:
    value: float = math.nan  # with several training seeds: the mean over seeds
    ci: tuple[float, float] | None = None
    p: float | None = None
    model: str | None = None  # with several seeds: None (the models are in ``models``)
    sd: float | None = None  # across-seed standard deviation (None with one seed)
    seed_values: list[float] | None = None  # the value of every seed (several seeds only)
    models: list[str | None] | None = None  # the model of every seed (several seeds only)


@dataclass
class Row:
    label: str
    model: str
    group: str
    cells: dict[str, Cell] = field(default_factory=dict)
    spec: dict = field(default_factory=dict)


@dataclass
class Table:
    name: str
    title: str
    columns: list[Column]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    significance: list[dict] = field(default_factory=list)
    row_header: str = "Method"

    @property
    def shown(self) -> list[Column]:
        return [c for c in self.columns if c.show]

    def column(self, key: str) -> Column:
        return next(c for c in self.columns if c.key == key)

    def parts(self, column: Column) -> list[Column]:
        """The columns a mean or NP column is computed from."""
        return [self.column(k) for k in column.parts]

    def value(self, model_or_label: str, key: str) -> float:
        for r in self.rows:
            if model_or_label in (r.model, r.label):
                return r.cells[key].value
        raise KeyError(f"table {self.name}: no row {model_or_label!r}")

    def best(self, key: str) -> float | None:
        col = next(c for c in self.columns if c.key == key)
        vals = [r.cells[key].value for r in self.rows if not math.isnan(r.cells[key].value)]
        if col.higher_is_better is None or not vals:
            return None
        return max(vals) if col.higher_is_better else min(vals)


def seed_rows(row: Mapping) -> list[dict]:
    """The row of every training seed: ``[row]`` for a row without ``seeds``; else the row with
    ``model`` (or ``per_testset`` of the composite experts row) of each seed, in seed order."""
    if "seeds" not in row:
        return [dict(row)]
    base = {k: v for k, v in row.items() if k not in ("seeds", "per_testset", "per_subset")}
    return [{**base, **(v if isinstance(v, Mapping) else {"model": v})} for v in row["seeds"].values()]


def row_models(row: Mapping, subset: str | None, testset: str | None = None) -> list[str | None]:
    """The model of every training seed that fills a row's cell (one entry without seeds)."""
    return [row_model(r, subset, testset) for r in seed_rows(row)]


def row_model(row: Mapping, subset: str | None, testset: str | None = None) -> str | None:
    """The model that fills a row's cell for ``subset`` / ``testset`` (composite rows: their
    expert, by test set -- one expert per language x task -- or by subset). A row of several
    seeds has one model per seed: ``row_models``."""
    if "seeds" in row:
        raise ValueError(f"row {row.get('model')!r} has several training seeds: use row_models")
    if "per_testset" in row:
        return row["per_testset"].get(testset)
    if "per_subset" in row:
        return row["per_subset"].get(subset)
    return row["model"]


def base_column(
    store: ResultStore, subset: str, task: str, group: str, *, header: str | None = None, show: bool = True
) -> Column:
    testset = N.testset(subset, task)
    metric = store.metric_for(testset)
    return Column(
        key=f"{metric}:{testset}",
        header=header or subset,
        group=group,
        metric=metric,
        kind="base",
        testset=testset,
        subset=subset,
        show=show,
    )


def mean_column(key: str, header: str, group: str, parts: Sequence[Column], *, show: bool = True) -> Column | None:
    parts = list(parts)
    if not parts:
        return None
    metrics = {c.metric for c in parts}
    if len(metrics) != 1:
        raise ValueError(f"column {key}: cannot average different metrics {sorted(metrics)}")
    return Column(
        key=key, header=header, group=group, metric=metrics.pop(), kind="mean", parts=[c.key for c in parts], show=show
    )
