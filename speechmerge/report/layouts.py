"""The three papers' table layouts, one object per experiment kind.

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

from speechmerge.evaluation import metrics as M
from speechmerge.report.scores import ResultStore
from speechmerge.report.table import METRIC_LABEL, Column, Table, base_column, mean_column

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
        return DomainsLayout().main_columns(spec, store)

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


class MultilingualLayout(Layout):
    """LoRS-Merging: ASR WER and ST BLEU per language, averages, normalised performance."""

    kind = "multilingual"
    title = "multilingual ASR and X→En ST per language (LoRS-Merging layout)"
    caption_metric = "WER (ASR) and BLEU (X→en ST)"

    def main_columns(self, spec: Mapping, store: ResultStore) -> list[Column]:
        cols: list[Column] = []
        tasks = list(spec.get("tasks", ["transcribe"]))
        np_groups = {}
        for task in tasks:
            subsets = [s for s in spec["subsets"] if not (task == "translate" and M.base_language(s) == "en")]
            base = [base_column(store, s, task, "") for s in subsets]
            metric = base[0].metric if base else ("bleu" if task == "translate" else "wer")
            group = (
                ("ASR " if task == "transcribe" else "ST ")
                + METRIC_LABEL[metric]
                + (" ↑" if metric == "bleu" else " (%) ↓")
            )
            for c in base:
                c.group = group
            cols += base
            m = mean_column(f"{metric}:avg-{task}", "Avg", group, base)
            if m:
                cols.append(m)
            np_groups[task] = base
        if spec.get("normalise_to"):
            all_base = [c for t in tasks for c in np_groups[t]]
            if len(tasks) > 1:
                for task in tasks:
                    cols.append(
                        Column(
                            key=f"np:{task}",
                            header="ASR" if task == "transcribe" else "ST",
                            group="NP ↑",
                            metric="np",
                            kind="np",
                            parts=[c.key for c in np_groups[task]],
                        )
                    )
            cols.append(
                Column(
                    key="np",
                    header="All" if len(tasks) > 1 else "NP",
                    group="NP ↑",
                    metric="np",
                    kind="np",
                    parts=[c.key for c in all_base],
                )
            )
        return cols

    def sweep_columns(self, spec: Mapping, store: ResultStore) -> list[Column]:
        cols = self.main_columns(spec, store)
        for c in cols:
            c.show = c.kind != "base"
        return cols

    def reference(self, spec: Mapping) -> dict | None:
        return find_row(spec, spec.get("normalise_to"), "normalise_to")

    def notes(self, spec: Mapping, reference: Mapping | None) -> list[str]:
        if reference is None:
            return []
        return [
            f"NP (normalised performance) = 100 × mean over per-language columns of a(row)/a("
            f"{reference.get('label', reference['model'])}), a = max(0, 100 − WER) for ASR and a = BLEU for ST; "
            "Avg = unweighted mean over languages."
        ]


class DomainsLayout(Layout):
    """BoostedTSV-M: in-domain, out-of-domain and retention averages; every test set in ``per_testset``."""

    kind = "domains"
    title = "in-domain, out-of-domain and retention error rates (BoostedTSV-M layout)"
    caption_metric = "WER"

    def main_columns(self, spec: Mapping, store: ResultStore, *, show_base: bool = False) -> list[Column]:
        idc = [base_column(store, s, "transcribe", "In-domain", show=show_base) for s in spec["subsets"]]
        ood = [
            base_column(store, s, "transcribe", "Out-of-domain", show=show_base) for s in spec.get("ood_subsets", [])
        ]
        ret = spec.get("retention_subsets", [])
        en = [
            base_column(store, s, "transcribe", "Retention", show=show_base) for s in ret if M.base_language(s) == "en"
        ]
        multi = [
            base_column(store, s, "transcribe", "Retention", show=show_base) for s in ret if M.base_language(s) != "en"
        ]
        metric = idc[0].metric if idc else "wer"
        grp = f"{METRIC_LABEL[metric]} (%) ↓"
        cols = idc + ood + en + multi
        for key, header, parts in (
            ("id", "ID", idc),
            ("ood", "OOD", ood),
            ("en", "English", en),
            ("multi", "Multilingual", multi),
            ("avg", "Avg", idc + ood + en + multi),
        ):
            m = mean_mixed(f"{metric}:{key}", header, grp, parts)
            if m:
                cols.append(m)
        return cols

    def notes(self, spec: Mapping, reference: Mapping | None) -> list[str]:
        return [
            "ID = mean over in-domain test sets; OOD = mean over out-of-domain sets; English / "
            "Multilingual = retention sets; Avg = unweighted mean over every test set of the row "
            "(per-test-set values in per_testset.*). Rows with missing columns (experts) have no Avg."
        ]

    def extra_tables(self, spec: Mapping, store: ResultStore) -> list[Table]:
        from speechmerge.report.tables import build_per_testset_table

        return [build_per_testset_table(spec, store)]

    def extra_captions(self, experiment: str) -> dict[str, str]:
        return {"per_testset.csv": f"{experiment}: WER of every method on every test set."}


class PeftLayout(Layout):
    """S2-LoRA: CER in and across domains, and the trainable parameters of each method."""

    kind = "peft"
    title = "in-domain and cross-domain CER and trainable parameters (S2-LoRA layout)"
    caption_metric = "CER"
    metric_override = "cer"
    counts_parameters = True
    has_forgetting = False

    def main_columns(self, spec: Mapping, store: ResultStore) -> list[Column]:
        ind = [base_column(store, s, "transcribe", "In-domain CER (%) ↓") for s in spec["subsets"]]
        cross = [
            base_column(store, s, "transcribe", "Cross-domain CER (%) ↓") for s in spec.get("peft_cross_subsets", [])
        ]
        cols = ind + cross
        if len(cross) > 1:
            cols.append(mean_column("cer:avg-cross", "Avg", "Cross-domain CER (%) ↓", cross))
        cols.append(Column(key="params", header="#", group="Trainable params", metric="params", kind="params"))
        cols.append(
            Column(key="params_pct", header="%", group="Trainable params", metric="params_pct", kind="params_pct")
        )
        return cols

    def notes(self, spec: Mapping, reference: Mapping | None) -> list[str]:
        return ["Trainable parameters counted once (proj_out tied to the token embedding); % of the total."]

    def extra_captions(self, experiment: str) -> dict[str, str]:
        return {
            "rank_allocation.png": f"{experiment}: learned rank per adapted module (module type × layer) — "
            "AdaLoRA's final ranks and S2-LoRA's non-zero coefficients."
        }


LAYOUTS: dict[str, Layout] = {cls.kind: cls() for cls in (MultilingualLayout, DomainsLayout, PeftLayout)}


def layout(spec: Mapping) -> Layout:
    """The layout of a report spec's experiment kind."""
    kind = spec["kind"]
    if kind not in LAYOUTS:
        raise ValueError(f"report spec: unknown kind {kind!r} ({', '.join(LAYOUTS)})")
    return LAYOUTS[kind]


def mean_mixed(key: str, header: str, group: str, parts: Sequence[Column]) -> Column | None:
    """A mean column over error-rate columns that may mix WER and CER (a retention set in a
    language without word spaces is scored by CER); labelled WER unless all parts are CER."""
    if not parts:
        return None
    metrics = {c.metric for c in parts}
    metric = metrics.pop() if len(metrics) == 1 else "wer"
    return Column(key=key, header=header, group=group, metric=metric, kind="mean", parts=[c.key for c in parts])
