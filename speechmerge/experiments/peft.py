"""Experiment kind ``peft`` — S2-LoRA (arXiv 2309.11756): full fine-tuning and the PEFT methods
(``speechmerge.training.peft``) on one low-resource subset; CER in domain and across domains,
trainable parameters, and the learned rank allocation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from speechmerge import names as N
from speechmerge.experiments.base import ExperimentKind, ReportSpec, register
from speechmerge.names import SPLITS
from speechmerge.plan.core import PlanError
from speechmerge.plan.data import add_dataset, add_testsets
from speechmerge.plan.training import add_training_job, combine_seeds, start_rows
from speechmerge.report.claims import ClaimDef, Side, Source
from speechmerge.report.layouts import Layout
from speechmerge.report.scores import ResultStore
from speechmerge.report.table import Column, base_column, mean_column

SOURCE = Source("S2-LoRA", "2309.11756")


@dataclass
class PeftFields:
    """The report keys only this kind has: its methods and cross-domain subsets."""

    peft_methods: list[str] = field(default_factory=list)
    peft_cross_subsets: list[str] = field(default_factory=list)


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


@register
class Peft(ExperimentKind):
    name = "peft"
    label = "S2-LoRA: full fine-tuning and PEFT methods on low-resource speech; CER in and across domains"
    paper = "S2-LoRA (arXiv 2309.11756)"
    selection_metric = "mean_error"
    layout = PeftLayout()
    claims = (
        ClaimDef(
            id="s2lora-matches-adalora-id",
            kind="peft",
            source=SOURCE,
            claim="S2-LoRA recognises in-domain speech as well as AdaLoRA.",
            a=Side("S2-LoRA", methods=("s2lora",)),
            b=Side("AdaLoRA", methods=("adalora",)),
            quantity="id",
            test="equivalence",
            effect="rel",
            margin=10.0,
            note="equivalence margin: ±10 % of AdaLoRA's CER",
            doc_comparison="`s2lora` vs `adalora`",
            doc_effect="100 × (CER(B) − CER(A)) / CER(B), %",
        ),
        ClaimDef(
            id="s2lora-fewer-params",
            kind="peft",
            source=SOURCE,
            claim="S2-LoRA trains far fewer parameters than AdaLoRA.",
            a=Side("S2-LoRA", methods=("s2lora",)),
            b=Side("AdaLoRA", methods=("adalora",)),
            quantity="params",
            test="at_most",
            margin=0.1,
            note="ratio of trainable parameters, threshold 1/10; the paper reports about 0.02 % of the model",
            doc_comparison="`s2lora` vs `adalora`",
            doc_effect="trainable(A) / trainable(B)",
        ),
        ClaimDef(
            id="s2lora-cross-domain",
            kind="peft",
            source=SOURCE,
            claim="S2-LoRA generalises better than AdaLoRA to domains it was not trained on.",
            a=Side("S2-LoRA", methods=("s2lora",)),
            b=Side("AdaLoRA", methods=("adalora",)),
            quantity="cross",
            test="superiority",
            doc_comparison="`s2lora` vs `adalora`",
            doc_effect="CER(B) − CER(A), points",
        ),
        ClaimDef(
            id="s2lora-rank-allocation",
            kind="peft",
            source=SOURCE,
            claim="S2-LoRA learns a rank allocation over the model's modules that resembles AdaLoRA's.",
            a=Side("S2-LoRA", methods=("s2lora",)),
            b=Side("AdaLoRA", methods=("adalora",)),
            quantity="ranks",
            test="correlation",
            note="Spearman ρ of the per-module ranks; p: permutation test; CI: bootstrap over modules",
            doc_comparison="`s2lora` vs `adalora`",
            doc_effect="Spearman ρ of the per-module ranks",
        ),
    )
    claims_quantity = (
        "Quantities: the mean CER over the in-domain test sets, the mean CER over the cross-domain test\n"
        "sets, the trainable parameters (`train_info.json`) and the learned rank per adapted module\n"
        "(`rank_allocation.json`: AdaLoRA's final rank, S2-LoRA's number of non-zero rank coefficients)."
    )
    claims_doc = """\
* **Equivalence margin, ±10 % of AdaLoRA's CER**, two-sided: "comparable" is not quantified by
  the paper; we use the same 10 % relative margin as for BoostedTSV-M's "matching".
* **"Far fewer" as at most a tenth.** An order of magnitude is our reading of "far fewer"; the
  paper reports about 0.02 % of the model's parameters for S2-LoRA (the note shows both
  methods' counts and percentages). The counts are exact, so there is no interval: reproduced if
  the ratio is ≤ 1/10, contradicted otherwise.
* **Rank allocation.** The two allocations are matched by module type and layer (whatever the
  prefix of the module names); ρ is Spearman's rank correlation (ties get average ranks). p is a
  two-sided permutation test (the S2-LoRA ranks permuted over modules, `n_boot` times:
  (1 + #{|ρ*| ≥ |ρ|}) / (n_boot + 1)); the CI resamples modules with replacement. "Resembles" is
  tested as a positive association. Modules of one layer are not independent, so the interval
  over modules is approximate. If one allocation gives every module the same rank (LoRA, or an
  AdaLoRA that has not yet pruned), ρ is undefined and the verdict inconclusive."""

    def plan(self, plan, name: str, exp: dict) -> ReportSpec:
        from speechmerge.training.peft import get_peft_method, peft_method_names

        language = exp["language"]
        ind = exp["in_domain"]
        add_dataset(
            plan,
            name,
            exp,
            ind["name"],
            language=language,
            domain=ind.get("domain", "clean"),
            splits=SPLITS,
            voice_profile=ind.get("voice_profile", "adult"),
            where=f"experiments.{name}.in_domain",
        )
        cross = []
        for c in exp.get("cross_domain", []):
            add_dataset(
                plan,
                name,
                exp,
                c["name"],
                language=language,
                domain=c.get("domain", "clean"),
                splits=("test",),
                voice_profile=c.get("voice_profile", "adult"),
                where=f"experiments.{name}.cross_domain",
            )
            cross.append(c["name"])
        if ind["name"] in cross:
            raise PlanError(f"experiments.{name}: {ind['name']!r} is both in_domain and cross_domain")
        tasks = ["transcribe"]
        tests = add_testsets(plan, name, ind["name"], language, tasks)
        for c in cross:
            tests += add_testsets(plan, name, c, language, tasks)
        methods = exp.get("methods", {})
        unknown = [m for m in methods if m not in peft_method_names()]
        if unknown:
            raise PlanError(
                f"experiments.{name}.methods: unknown method {unknown[0]!r}; known: {list(peft_method_names())}"
            )
        per_seed: dict[int, list[dict]] = {}
        for seed in plan.seeds:
            tag = plan.seed_tag(seed)
            per_seed[seed] = []
            for method, overrides in methods.items():
                job = N.seeded(method, tag)
                add_training_job(
                    plan,
                    name,
                    exp,
                    job,
                    overrides=overrides,
                    train=[(name, ind["name"], "train")],
                    dev=[(name, ind["name"], "dev")],
                    tasks=tasks,
                    init=None,
                    method=method,
                    seed=None if tag is None else seed,
                )
                label = get_peft_method(method).label
                per_seed[seed].append({"model": job, "label": label, "group": "peft", "method": method})
        rows = start_rows(plan, name) + combine_seeds(plan, per_seed)
        evaluated = [r["model"] for r in start_rows(plan, name)] + [
            r["model"] for out in per_seed.values() for r in out
        ]
        for model in evaluated:
            plan.evaluations += [(name, model, t) for t in tests]
        plan.experts[name] = []
        plan.seed_experts[name] = {seed: [] for seed in plan.seeds}
        return ReportSpec(
            experiment=name,
            kind=self.name,
            subsets=[ind["name"]],
            tasks=tasks,
            rows=rows,
            normalise_to=None,
            expert_testsets={r["model"]: list(tests[:1]) for out in per_seed.values() for r in out},
            baseline_for_significance="full" if "full" in methods else N.ZEROSHOT,
            fields=PeftFields(peft_methods=list(methods), peft_cross_subsets=cross),
        )
