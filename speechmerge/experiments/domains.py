"""Experiment kind ``domains`` — BoostedTSV-M (arXiv 2603.05354): one language in many acoustic
domains, one expert per training domain, the all-domain Full-FT baseline, every merging method;
WER in domain, out of domain and on the retention languages (English, multilingual)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from speechmerge import names as N
from speechmerge.evaluation import metrics as M
from speechmerge.experiments.base import ExperimentKind, ReportSpec, register
from speechmerge.names import SPLITS
from speechmerge.plan.core import PlanError
from speechmerge.plan.data import add_dataset, add_testsets
from speechmerge.plan.training import experts_baselines_merges
from speechmerge.report.claims import ClaimDef, Side, Source
from speechmerge.report.filling import fill_table
from speechmerge.report.layouts import Layout, mean_mixed
from speechmerge.report.scores import ResultStore
from speechmerge.report.table import METRIC_LABEL, Column, Table, base_column
from speechmerge.report.tables import baseline_row, n_seeds, rows_of, seeds_note, significance_note

SOURCE = Source("BoostedTSV-M", "2603.05354")
PARAMETER_SPACE = ("soup", "model_stock", "karcher", "multislerp")


@dataclass
class DomainsFields:
    """The report keys only this kind has: its out-of-domain and retention subsets."""

    ood_subsets: list[str] = field(default_factory=list)
    retention_subsets: list[str] = field(default_factory=list)


def error_rate_columns(spec: Mapping, store: ResultStore, *, show_base: bool = False) -> list[Column]:
    """In-domain, out-of-domain and retention test sets, with their means (ID, OOD, English,
    Multilingual) and the mean over every test set (Avg)."""
    idc = [base_column(store, s, "transcribe", "In-domain", show=show_base) for s in spec["subsets"]]
    ood = [base_column(store, s, "transcribe", "Out-of-domain", show=show_base) for s in spec.get("ood_subsets", [])]
    ret = spec.get("retention_subsets", [])
    en = [base_column(store, s, "transcribe", "Retention", show=show_base) for s in ret if M.base_language(s) == "en"]
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


def build_per_testset_table(spec: Mapping, store: ResultStore) -> Table:
    """Every test set of the experiment as its own column."""
    cols = error_rate_columns(spec, store, show_base=True)
    for c in cols:
        if c.kind == "mean":
            c.show = c.key.endswith(":avg")
    baseline = baseline_row(spec)
    table = Table(
        name="per_testset",
        title=f"{spec['experiment']}: error rate per test set",
        columns=cols,
        rows=rows_of(spec["rows"]),
    )
    fill_table(table, store, baseline=baseline)
    table.notes = (
        ["Error rates (%) per test set; lower is better. Bold: best in column."]
        + seeds_note(spec)
        + significance_note(baseline, store.n_boot, n_seeds(spec))
    )
    return table


class DomainsLayout(Layout):
    """BoostedTSV-M: in-domain, out-of-domain and retention averages; every test set in ``per_testset``."""

    kind = "domains"
    title = "in-domain, out-of-domain and retention error rates (BoostedTSV-M layout)"
    caption_metric = "WER"

    def main_columns(self, spec: Mapping, store: ResultStore) -> list[Column]:
        return error_rate_columns(spec, store)

    def notes(self, spec: Mapping, reference: Mapping | None) -> list[str]:
        return [
            "ID = mean over in-domain test sets; OOD = mean over out-of-domain sets; English / "
            "Multilingual = retention sets; Avg = unweighted mean over every test set of the row "
            "(per-test-set values in per_testset.*). Rows with missing columns (experts) have no Avg."
        ]

    def extra_tables(self, spec: Mapping, store: ResultStore) -> list[Table]:
        return [build_per_testset_table(spec, store)]

    def extra_captions(self, experiment: str) -> dict[str, str]:
        return {"per_testset.csv": f"{experiment}: WER of every method on every test set."}


@register
class Domains(ExperimentKind):
    name = "domains"
    label = "BoostedTSV-M: one language in many acoustic domains; in-domain, out-of-domain and retention WER"
    paper = "BoostedTSV-M (arXiv 2603.05354)"
    selection_metric = "mean_error"
    layout = DomainsLayout()
    claims = (
        ClaimDef(
            id="boosted-vs-tsvm",
            kind="domains",
            source=SOURCE,
            claim="Boosting the small singular values (BoostedTSV-M) lowers TSV-M's in-domain WER.",
            a=Side("BoostedTSV-M", methods=("boosted_tsv_m",)),
            b=Side("TSV-M", methods=("tsv_m",)),
            quantity="id",
            test="superiority",
            doc_comparison="`boosted_tsv_m` vs `tsv_m`",
            doc_effect="WER(B) − WER(A), points",
        ),
        ClaimDef(
            id="boosted-matches-fullft-id",
            kind="domains",
            source=SOURCE,
            claim="BoostedTSV-M is as good in-domain as one model fine-tuned on all domains (Full-FT), or better.",
            a=Side("BoostedTSV-M", methods=("boosted_tsv_m",)),
            b=Side("Full-FT", models=(N.JOINT,)),
            quantity="id",
            test="noninferiority",
            effect="rel",
            margin=10.0,
            note="margin: 10 % of Full-FT's WER (the paper calls an 8.5 % relative gap matching)",
            doc_comparison="`boosted_tsv_m` vs `joint`",
            doc_effect="100 × (WER(B) − WER(A)) / WER(B), %",
        ),
        ClaimDef(
            id="boosted-keeps-ood",
            kind="domains",
            source=SOURCE,
            claim="BoostedTSV-M keeps out-of-domain accuracy: its out-of-domain WER is no worse than Full-FT's.",
            a=Side("BoostedTSV-M", methods=("boosted_tsv_m",)),
            b=Side("Full-FT", models=(N.JOINT,)),
            quantity="ood",
            test="noninferiority",
            effect="rel",
            margin=10.0,
            note="margin: 10 % of Full-FT's WER, as in-domain",
            doc_comparison="`boosted_tsv_m` vs `joint`",
            doc_effect="as above, on OOD",
        ),
        ClaimDef(
            id="parameter-space-keeps-english",
            kind="domains",
            source=SOURCE,
            claim="Merging in parameter space (SOUP, Model Stock, Karcher mean, Multi-SLERP) keeps English "
            "recognition best among the merges.",
            a=Side("parameter-space merges", methods=PARAMETER_SPACE, best=True),
            b=Side("other merges", methods=PARAMETER_SPACE, merges=True, best=True),
            quantity="en",
            test="superiority",
            note="best row of each group, chosen again in every bootstrap replicate",
            doc_comparison="best of `soup`, `model_stock`, `karcher`, `multislerp` vs best of the other merge rows",
            doc_effect="WER points on English",
        ),
        ClaimDef(
            id="ties-hurts-english",
            kind="domains",
            source=SOURCE,
            claim="TIES merging can make English recognition worse than the model merged into "
            "(zero-shot Whisper; here θ₀ when the run has a context-adapted base).",
            a=Side("TIES", methods=("ties",)),
            b=Side("the start", models=(N.ADAPTED, N.ZEROSHOT), first=True),
            quantity="en",
            test="superiority",
            direction="worse",
            doc_claim="TIES merging can make English recognition worse than the model it merges into (zero-shot "
            "Whisper in the paper; θ₀ when the run has a context-adapted base, else `zeroshot`).",
            doc_comparison="`ties` vs `adapted-base` (or `zeroshot`)",
            doc_effect="WER(A) − WER(B), points",
        ),
    )
    claims_quantity = (
        "Quantities: the unweighted mean WER over the in-domain test sets (**ID**), over the out-of-domain\n"
        "sets (**OOD**), and the WER on the English retention set (**English**; the mean if there are\n"
        "several English sets) — the `ID`, `OOD` and `English` columns of the main table."
    )
    claims_doc = """\
* **Non-inferiority margin, 10 % of Full-FT's WER.** The paper calls BoostedTSV-M's in-domain
  WER "matching" Full-FT's at 9.27 against 8.54, a gap of 8.5 % of Full-FT's WER; a margin of
  10 % of Full-FT's WER is the smallest round margin that admits the gap the paper itself counts
  as a match. The effect is relative (in % of Full-FT's WER) in every bootstrap replicate, so
  the margin scales with the baseline and its uncertainty is in the interval.
* The out-of-domain claim ("keeps generalisation") is tested the same way: no worse than
  Full-FT by more than the margin.
* Parameter space against the rest: the best row of each group is chosen again in every
  bootstrap replicate, so the interval includes the selection; the `comparison` column names the
  rows that are best on the observed data. Only English is tested (the paper also speaks of
  multilingual retention).
* TIES-like: only the `ties` row is tested (DARE-TIES and others are not counted), against the
  model the merge adds its task vectors to: θ₀ (`adapted-base`) when the run has a
  context-adapted base, else `zeroshot`."""

    def plan(self, plan, name: str, exp: dict) -> ReportSpec:
        language = exp["language"]
        train_domains = list(exp["train_domains"])
        ood = list(exp.get("ood_domains", []))
        overlap = set(train_domains) & set(ood)
        if overlap:
            raise PlanError(f"experiments.{name}: domains {sorted(overlap)} are both train_domains and ood_domains")
        for d in train_domains:
            add_dataset(
                plan,
                name,
                exp,
                d,
                language=language,
                domain=d,
                splits=SPLITS,
                where=f"experiments.{name}.train_domains",
            )
        for d in ood:
            add_dataset(
                plan,
                name,
                exp,
                d,
                language=language,
                domain=d,
                splits=("test",),
                where=f"experiments.{name}.ood_domains",
            )
        retention = []
        for lang in exp.get("retention_languages", []):
            subset = N.retention_subset(lang)
            add_dataset(
                plan,
                name,
                exp,
                subset,
                language=lang,
                domain="clean",
                splits=("test",),
                where=f"experiments.{name}.retention_languages",
            )
            retention.append(subset)
        tasks = ["transcribe"]
        id_tests = [t for d in train_domains for t in add_testsets(plan, name, d, language, tasks)]
        other_tests = [t for d in ood for t in add_testsets(plan, name, d, language, tasks)]
        other_tests += [t for s in retention for t in add_testsets(plan, name, s, N.retention_language(s), tasks)]
        units, rows, sweeps, stages, expert_testsets = experts_baselines_merges(
            plan,
            name,
            exp,
            train_domains,
            tasks,
            own_tests={d: [N.testset(d, "transcribe")] for d in train_domains},
            all_tests=id_tests + other_tests,
            forgetting_tests=id_tests,
            experts_label="ID-FT (per-domain experts)",
            joint_label="Full-FT (all domains)",
        )
        return ReportSpec(
            experiment=name,
            kind=self.name,
            subsets=train_domains,
            tasks=tasks,
            rows=rows,
            normalise_to="experts",
            sweeps=sweeps,
            sequential=stages,
            experts={label: job for label, (job, _) in units.items()},
            expert_testsets=expert_testsets,
            baseline_for_significance=N.JOINT if any(r["model"] == N.JOINT for r in rows) else N.ZEROSHOT,
            fields=DomainsFields(ood_subsets=ood, retention_subsets=retention),
        )
