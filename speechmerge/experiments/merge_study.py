"""Experiment kind ``merge-study`` — merge your own experts: Whisper models fine-tuned elsewhere
(Hugging Face folders, single or sharded safetensors, LoRA / AdaLoRA adapter folders), each
with the language and task it was trained for, on dev and test sets from any data source.

The DAG imports each expert onto the study's base (``import_expert``: adapters materialised,
the encoder context cropped like the base), evaluates the base and each expert, merges them
with every listed method (hyperparameters chosen on the dev sets), evaluates the merges on every
test set and writes the same tables, figures and significance tests as the paper kinds, and no
claims. Each expert's ``name`` names its data subset and its test set ``{name}-{task}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from speechmerge import names as N
from speechmerge.experiments.base import ExperimentKind, ReportSpec, register
from speechmerge.experiments.multilingual import np_note, per_task_columns
from speechmerge.languages import whisper_language
from speechmerge.plan.core import PlanError
from speechmerge.plan.data import add_dataset, add_testsets
from speechmerge.plan.merges import add_merges
from speechmerge.plan.training import start_rows
from speechmerge.report.layouts import Layout, find_row
from speechmerge.report.scores import ResultStore
from speechmerge.report.table import Column


@dataclass
class MergeStudyFields:
    """The report keys only this kind has: the task of each expert's test set."""

    subset_tasks: dict[str, str] = field(default_factory=dict)


class MergeStudyLayout(Layout):
    """Each expert's test set (ASR error rate or ST BLEU), the mean per task, NP against the experts."""

    kind = "merge-study"
    title = "your experts and their merges on every test set"
    caption_metric = "WER (ASR) and BLEU (ST)"
    has_forgetting = False

    def main_columns(self, spec: Mapping, store: ResultStore) -> list[Column]:
        tasks = spec.get("subset_tasks") or {}
        return per_task_columns(spec, store, lambda task: [s for s in spec["subsets"] if tasks.get(s) == task])

    def reference(self, spec: Mapping) -> dict | None:
        return find_row(spec, spec.get("normalise_to"), "normalise_to")

    def notes(self, spec: Mapping, reference: Mapping | None) -> list[str]:
        return np_note(reference, "test-set columns", "the test sets of a task")


@register
class MergeStudy(ExperimentKind):
    name = "merge-study"
    label = "your own experts (model folders, safetensors, LoRA/AdaLoRA adapters) merged and evaluated; no claims"
    selection_metric = "np"
    trains = False
    layout = MergeStudyLayout()

    def plan(self, plan, name: str, exp: dict) -> ReportSpec:
        experts = list(exp["experts"])
        names = [e["name"] for e in experts]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise PlanError(f"config key 'experiments.{name}.experts': names {repeated} are used twice")
        own, subset_tasks, jobs = {}, {}, []
        for k, e in enumerate(experts):
            where = f"experiments.{name}.experts[{k}]"
            try:
                language = whisper_language(e["language"])
            except ValueError as err:
                raise PlanError(f"config key '{where}.language': {err}") from None
            task = e.get("task", "transcribe")
            add_dataset(
                plan,
                name,
                exp,
                e["name"],
                language=language,
                domain=e.get("domain", "clean"),
                splits=("dev", "test"),
                where=f"{where}.domain",
            )
            own[e["name"]] = add_testsets(plan, name, e["name"], language, [task])
            if not own[e["name"]]:
                raise PlanError(f"config key '{where}.task': {language} → English translation of English speech")
            subset_tasks[e["name"]] = task
            job = N.expert_job(e["name"])
            plan.imported[(name, job)] = {
                "experiment": name,
                "job": job,
                "name": e["name"],
                "path": str(e["path"]),
                "language": language,
                "task": task,
            }
            jobs.append(job)
        plan.devsets[name] = [{"testset": t, **plan.testsets[(name, t)]} for tests in own.values() for t in tests]
        plan.experts[name] = jobs
        plan.seed_experts[name] = {seed: jobs for seed in plan.seeds}
        all_tests = [t for tests in own.values() for t in tests]
        merge_rows, sweeps = add_merges(plan, name, exp, jobs)
        experts_row = {
            "model": "experts",
            "label": "Individual experts",
            "group": "baseline",
            "per_testset": {t: N.expert_job(s) for s, tests in own.items() for t in tests},
        }
        rows = start_rows(plan, name) + [experts_row] + merge_rows
        evaluated = [r["model"] for r in start_rows(plan, name)] + [r["model"] for r in merge_rows]
        evaluated += [p["model"] for s in sweeps for p in s["points"]]
        for model in evaluated:
            plan.evaluations += [(name, model, t) for t in all_tests]
        for s, tests in own.items():
            plan.evaluations += [(name, N.expert_job(s), t) for t in tests]
        return ReportSpec(
            experiment=name,
            kind=self.name,
            subsets=names,
            tasks=list(dict.fromkeys(subset_tasks[s] for s in names)),
            rows=rows,
            normalise_to="experts",
            sweeps=sweeps,
            experts={s: N.expert_job(s) for s in names},
            expert_testsets={N.expert_job(s): tests for s, tests in own.items()},
            baseline_for_significance=N.ZEROSHOT,
            fields=MergeStudyFields(subset_tasks=subset_tasks),
        )
