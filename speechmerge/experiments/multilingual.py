"""Experiment kind ``multilingual`` — LoRS-Merging (arXiv 2502.17380): one expert per language
(ASR and X→en ST, or one per language × task), the multi-lingual multi-task and sequential
baselines, every merging method; WER and BLEU per language, their averages and normalised
performance (NP) against the experts."""

from __future__ import annotations

from typing import Mapping

from speechmerge import names as N
from speechmerge.evaluation import metrics as M
from speechmerge.experiments.base import ExperimentKind, ReportSpec, register
from speechmerge.names import SPLITS
from speechmerge.plan.data import add_dataset, add_testsets
from speechmerge.plan.training import experts_baselines_merges
from speechmerge.report.claims import ClaimDef, Side, Source
from speechmerge.report.layouts import Layout, find_row
from speechmerge.report.scores import ResultStore
from speechmerge.report.table import METRIC_LABEL, Column, base_column, mean_column

SOURCE = Source("LoRS-Merging", "2502.17380")
LORS_ABLATIONS = ("lors", "lors_lowrank", "lors_sparse")


def per_task_columns(spec: Mapping, store: ResultStore, subsets_of_task) -> list[Column]:
    """Per test set columns grouped by task (ASR error rate, ST BLEU), an average per task and
    NP columns against the ``normalise_to`` row; ``subsets_of_task(task)``: the subsets scored
    for that task. Shared by the kinds whose main table is a language × task grid."""
    cols: list[Column] = []
    tasks = list(spec.get("tasks", ["transcribe"]))
    np_groups = {}
    for task in tasks:
        base = [base_column(store, s, task, "") for s in subsets_of_task(task)]
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


def np_note(reference: Mapping | None, what: str = "per-language columns", avg: str = "languages") -> list[str]:
    if reference is None:
        return []
    return [
        f"NP (normalised performance) = 100 × mean over {what} of a(row)/a("
        f"{reference.get('label', reference['model'])}), a = max(0, 100 − WER) for ASR and a = BLEU for ST; "
        f"Avg = unweighted mean over {avg}."
    ]


class MultilingualLayout(Layout):
    """LoRS-Merging: ASR WER and ST BLEU per language, averages, normalised performance."""

    kind = "multilingual"
    title = "multilingual ASR and X→En ST per language (LoRS-Merging layout)"
    caption_metric = "WER (ASR) and BLEU (X→en ST)"

    def main_columns(self, spec: Mapping, store: ResultStore) -> list[Column]:
        return per_task_columns(
            spec,
            store,
            lambda task: [s for s in spec["subsets"] if not (task == "translate" and M.base_language(s) == "en")],
        )

    def reference(self, spec: Mapping) -> dict | None:
        return find_row(spec, spec.get("normalise_to"), "normalise_to")

    def notes(self, spec: Mapping, reference: Mapping | None) -> list[str]:
        return np_note(reference)


@register
class Multilingual(ExperimentKind):
    name = "multilingual"
    label = "LoRS-Merging: per-language experts for ASR and X→en ST, merged; WER, BLEU and NP per language"
    paper = "LoRS-Merging (arXiv 2502.17380)"
    selection_metric = "np"
    layout = MultilingualLayout()
    claims = (
        ClaimDef(
            id="lors-vs-joint",
            kind="multilingual",
            source=SOURCE,
            claim="Merging the language experts with LoRS-Merging gives a better model than training one "
            "model on every language and task at once.",
            a=Side("LoRS-Merging", methods=("lors",)),
            b=Side("multi-task training", models=(N.JOINT,)),
            quantity="np",
            test="superiority",
            doc_comparison="`merge-lors` vs `joint`",
            doc_effect="NP(A) − NP(B), NP points",
        ),
        ClaimDef(
            id="lors-vs-sequential",
            kind="multilingual",
            source=SOURCE,
            claim="LoRS-Merging gives a better model than fine-tuning one model on the languages one after another.",
            a=Side("LoRS-Merging", methods=("lors",)),
            b=Side("sequential training", labels=("Sequential",)),
            quantity="np",
            test="superiority",
            doc_comparison='`merge-lors` vs the row labelled "Sequential"',
            doc_effect="NP points",
        ),
        ClaimDef(
            id="lors-vs",
            kind="multilingual",
            source=SOURCE,
            claim="LoRS-Merging gives a better model than {other} merging of the same experts.",
            a=Side("LoRS-Merging", methods=("lors",)),
            b=Side("each other merge", methods=LORS_ABLATIONS, merges=True),
            quantity="np",
            test="superiority",
            each=True,
            note="its own halves (low-rank only, sparse only) are ablations, not compared",
            doc_id="lors-vs-<method>",
            doc_claim="LoRS-Merging gives a better model than `<method>` merging of the same experts.",
            doc_comparison="`merge-lors` vs each other merge row",
            doc_effect="NP points",
        ),
        ClaimDef(
            id="lors-np-20pct",
            kind="multilingual",
            source=SOURCE,
            claim="LoRS-Merging improves normalised performance by more than 20 % over multi-task training.",
            a=Side("LoRS-Merging", methods=("lors",)),
            b=Side("multi-task training", models=(N.JOINT,)),
            quantity="np",
            test="threshold",
            effect="rel",
            margin=20.0,
            note="the paper does not say relative to what the 20 % is; tested as NP relative to multi-task training",
            doc_comparison="`merge-lors` vs `joint`",
            doc_effect="100 × (NP(A) − NP(B)) / NP(B), %",
        ),
    )
    claims_quantity = (
        "Quantity: **NP All**, the normalised performance of the main table (per language and task column\n"
        "a = max(0, 100 − WER) for ASR, a = BLEU for ST; NP = 100 × mean of a(row) / a(individual\n"
        "experts), so the experts row is 100; the formula is ours, the paper does not publish one)."
    )
    claims_doc = """\
* One `lors-vs-<method>` claim per merge row of the main table (the default merge of each
  method in `merges`; sweep points are not rows). LoRS's own halves (`lors_lowrank`,
  `lors_sparse`) are its ablations and are not compared.
* The paper does not say relative to what its "over 20 %" is measured; we test it against
  multi-task training, the baseline an earlier version of the paper reported its relative WER
  and BLEU gains against. The note of the row says so."""

    def plan(self, plan, name: str, exp: dict) -> ReportSpec:
        languages = list(exp["languages"])
        tasks = list(exp.get("tasks", ["transcribe"]))
        domain = exp.get("domain", "clean")
        for lang in languages:
            add_dataset(
                plan, name, exp, lang, language=lang, domain=domain, splits=SPLITS, where=f"experiments.{name}.domain"
            )
        testsets = {lang: add_testsets(plan, name, lang, lang, tasks) for lang in languages}
        all_tests = [t for lang in languages for t in testsets[lang]]
        asr_tests = [t for t in all_tests if N.testset_task(t) == "transcribe"]
        units, rows, sweeps, stages, expert_testsets = experts_baselines_merges(
            plan,
            name,
            exp,
            languages,
            tasks,
            own_tests=testsets,
            all_tests=all_tests,
            forgetting_tests=asr_tests,  # forgetting curve: intermediate stages on ASR only
            experts_label="Individual experts",
            joint_label="Multi-lingual multi-task",
            per_task=bool(exp.get("experts_per_task", False)),
        )
        return ReportSpec(
            experiment=name,
            kind=self.name,
            subsets=languages,
            tasks=tasks,
            rows=rows,
            normalise_to="experts",
            sweeps=sweeps,
            sequential=stages,
            experts={label: job for label, (job, _) in units.items()},
            expert_testsets=expert_testsets,
            baseline_for_significance=N.JOINT if any(r["model"] == N.JOINT for r in rows) else N.ZEROSHOT,
        )
