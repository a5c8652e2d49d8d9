"""From a validated config to the plan of the DAG: what to synthesise, train, merge and evaluate.

The Snakefile asks this module, never the raw config, what exists. Keeping the logic here (and
not in ``rules/*.smk``) makes it testable and keeps the rules declarative.

Names (see docs/ARCHITECTURE.md): datasets are (experiment, subset, split); training jobs are
``expert-{subset}`` (``expert-{subset}-{task}`` with ``experts_per_task``), ``joint``,
``seq-{k}`` or a PEFT method name; merge variants are
``{method}`` or ``{method}@{param}={value}``; evaluated models are ``zeroshot``, a job, or
``merge-{variant}``; test sets are ``{subset}-{task}``. With several training seeds (config
``seeds``) every seeded name ends in ``~s{seed}`` (``names.seeded``), and a report row keeps its
unsuffixed ``model`` as its name and lists the models of its seeds in ``seeds``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterable

from speechmerge import names as N
from speechmerge.names import SPLITS, TASKS, format_value  # noqa: F401  (re-exported)

PEFT_METHODS = ("full", "bitfit", "lora", "adalora", "s2lora")

PEFT_LABELS = {
    "full": "Full fine-tuning",
    "bitfit": "BitFit",
    "lora": "LoRA",
    "adalora": "AdaLoRA",
    "s2lora": "S2-LoRA",
}


class PlanError(ValueError):
    """A config that passes the schema but does not describe a runnable experiment."""


def _merge_dicts(*dicts: dict | None) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in (d or {}).items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = _merge_dicts(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
    return out


@dataclass
class Plan:
    config: dict
    datasets: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    jobs: dict[tuple[str, str], dict] = field(default_factory=dict)
    # the experts of the first training seed (what task-vector cosines and spectra are drawn from)
    experts: dict[str, list[str]] = field(default_factory=dict)
    seed_experts: dict[str, dict[int, list[str]]] = field(default_factory=dict)  # experiment -> seed -> experts
    variants: dict[tuple[str, str], dict] = field(default_factory=dict)
    testsets: dict[tuple[str, str], dict] = field(default_factory=dict)
    evaluations: list[tuple[str, str, str]] = field(default_factory=list)
    reports: dict[str, dict] = field(default_factory=dict)
    # experiment -> the dev sets merges are selected on ({"testset", "subset", "task", "language"})
    devsets: dict[str, list[dict]] = field(default_factory=dict)

    # ----- names and paths -------------------------------------------------------------
    @property
    def base_name(self) -> str:
        return self.config["base_model"]["name"]

    @property
    def base_dir(self) -> str:
        return N.BASE_MODEL_DIR.format(model_name=self.base_name)

    @property
    def experiments(self) -> list[str]:
        return list(self.reports)

    @property
    def seeds(self) -> list[int]:
        """The training seeds: config ``seeds``, else ``[seed]``."""
        seeds = self.config.get("seeds")
        if seeds is None:
            return [int(self.config.get("seed", 0))]
        if not seeds or len(set(seeds)) != len(seeds):
            raise PlanError(f"config key 'seeds': need at least one seed and no repeats, got {seeds}")
        return [int(s) for s in seeds]

    def seed_tag(self, seed: int) -> int | None:
        """The seed a name carries (``names.seeded``): None with one training seed."""
        return seed if len(self.seeds) > 1 else None

    @property
    def namespaces(self) -> list[str]:
        """Values of the ``experiment`` wildcard: the experiments and, with a context-adapted
        base, the name its data and training job live under (``names.ADAPTATION``)."""
        return self.experiments + ([N.ADAPTATION] if self.adapted_base else [])

    # ----- the models every experiment starts from -------------------------------------
    @property
    def crop_seconds(self) -> int | None:
        """The encoder context of the experiments in seconds, or None (Whisper's native 30 s)."""
        return (self.config.get("audio") or {}).get("max_seconds")

    @property
    def native_zeroshot(self) -> bool:
        """Whether the base is also evaluated at its native 30 s context (only when cropped)."""
        audio = self.config.get("audio") or {}
        crop = self.crop_seconds
        return crop is not None and crop < 30 and bool(audio.get("native_zeroshot", True))

    @property
    def adapted_base(self) -> bool:
        """Whether every fine-tuning job starts from the context-adapted base θ₀."""
        return bool((self.config.get("adapted_base") or {}).get("enabled", False))

    @property
    def theta0_config(self) -> str:
        """config.json of θ₀: the context-adapted base, else the imported base."""
        if self.adapted_base:
            return N.MODEL_CONFIG.format(experiment=N.ADAPTATION, job=N.ADAPTATION_JOB)
        return N.BASE_MODEL_CONFIG.format(model_name=self.base_name)

    @property
    def theta0_weights(self) -> str:
        """Weights of θ₀, what task vectors are taken from and merges are added to."""
        if self.adapted_base:
            return N.MODEL_WEIGHTS.format(experiment=N.ADAPTATION, job=N.ADAPTATION_JOB)
        return N.BASE_MODEL_WEIGHTS.format(model_name=self.base_name)

    def dataset_path(self, experiment: str, subset: str, split: str) -> str:
        return N.DATASET.format(experiment=experiment, subset=subset, split=split)

    def model_dir(self, experiment: str, job: str) -> str:
        return N.MODEL_DIR.format(experiment=experiment, job=job)

    def taskvector_path(self, experiment: str, job: str) -> str:
        return N.TASK_VECTOR.format(experiment=experiment, job=job)

    def merged_path(self, experiment: str, variant: str) -> str:
        return N.MERGED_WEIGHTS.format(experiment=experiment, variant=variant)

    def merge_info_path(self, experiment: str, variant: str) -> str:
        return N.MERGE_INFO.format(experiment=experiment, variant=variant)

    def weights_path(self, experiment: str, model: str) -> str:
        """The safetensors file with the full weights of an evaluated model."""
        if model == N.ZEROSHOT:
            return N.BASE_MODEL_WEIGHTS.format(model_name=self.base_name)
        if model == N.ZEROSHOT_NATIVE:
            return N.NATIVE_MODEL_WEIGHTS.format(model_name=self.base_name)
        if model == N.ADAPTED:
            return self.theta0_weights
        variant = N.merge_variant(model)
        if variant is not None:
            return self.merged_path(experiment, variant)
        if (experiment, model) in self.jobs:
            return N.MODEL_WEIGHTS.format(experiment=experiment, job=model)
        raise KeyError(f"experiment {experiment!r} has no model {model!r}")

    def eval_model_config(self, experiment: str, model: str) -> str:
        """config.json of the architecture an evaluated model is loaded into (its context)."""
        if model == N.ZEROSHOT_NATIVE:
            return N.NATIVE_MODEL_CONFIG.format(model_name=self.base_name)
        return N.BASE_MODEL_CONFIG.format(model_name=self.base_name)

    def eval_prefix(self, experiment: str, model: str) -> str:
        """One evaluation job per model: ``{prefix}.json`` (scores) and ``{prefix}.jsonl`` (hyps)."""
        return N.EVAL_PREFIX.format(experiment=experiment, model=model)

    def model_testsets(self, experiment: str, model: str) -> list[str]:
        """The test sets a model is evaluated on, in plan order, without repeats."""
        return list(dict.fromkeys(t for e, m, t in self.evaluations if e == experiment and m == model))

    def evaluated_models(self, experiment: str) -> list[str]:
        return list(dict.fromkeys(m for e, m, _ in self.evaluations if e == experiment))

    def report_dir(self, experiment: str) -> str:
        return N.REPORT_DIR.format(experiment=experiment)

    # ----- what the report rule needs --------------------------------------------------
    def report_inputs(self, experiment: str) -> dict[str, list[str]]:
        models = self.evaluated_models(experiment)
        jobs = [j for (e, j) in self.jobs if e == experiment]
        peft_jobs = [j for j in jobs if self.jobs[(experiment, j)]["method"] in ("adalora", "s2lora")]
        return {
            "scores": [N.SCORES.format(experiment=experiment, model=m) for m in models],
            "hyps": [N.HYPOTHESES.format(experiment=experiment, model=m) for m in models],
            "train_infos": [N.TRAIN_INFO.format(experiment=experiment, job=j) for j in jobs],
            "rank_allocations": [N.RANK_ALLOCATION.format(experiment=experiment, job=j) for j in peft_jobs],
            "taskvectors": [self.taskvector_path(experiment, j) for j in self.experts.get(experiment, [])],
            "cosines": [N.TASKVECTOR_COSINES.format(experiment=experiment)]
            if len(self.experts.get(experiment, [])) >= 2
            else [],
            "merge_infos": [self.merge_info_path(experiment, v) for v in self.selected_variants(experiment)],
        }

    # ----- what the other rules need ---------------------------------------------------
    def evaluation_testsets(self, experiment: str, model: str) -> list[dict]:
        """The test sets of one evaluation job, in plan order: ``{"testset", "subset", "task", "language"}``."""
        return [{"testset": t, **self.testsets[(experiment, t)]} for t in self.model_testsets(experiment, model)]

    @property
    def evaluation_settings(self) -> dict:
        """The ``evaluation`` config every decoding job gets; with ``on_long_utterance: skip``
        also ``skip_over_s``, the experiments' context, so that every model (the 30 s zero-shot
        too) leaves out the same utterances."""
        settings = dict(self.config.get("evaluation") or {})
        if settings.get("on_long_utterance") == "skip":
            settings["skip_over_s"] = self.crop_seconds or 30
        return settings

    def evaluation_spec(self, experiment: str, model: str) -> dict:
        """params.spec of the evaluate rule: the model, its test sets and the ``evaluation`` config."""
        return {
            "experiment": experiment,
            "model": model,
            "testsets": self.evaluation_testsets(experiment, model),
            **self.evaluation_settings,
        }

    def evaluation_files(self, experiment: str, model: str) -> list[str]:
        """The test split of every test set of one evaluation job, in the order of its spec."""
        return [self.dataset_path(experiment, t["subset"], "test") for t in self.evaluation_testsets(experiment, model)]

    def finetune_spec(self, experiment: str, job: str) -> dict:
        """params.spec of the finetune rule: the job spec without its input files."""
        spec = dict(self.jobs[(experiment, job)])
        for key in ("train", "dev", "init"):
            spec.pop(key)
        return spec

    def finetune_start(self, experiment: str, job: str) -> str:
        """config.json of the model a job starts from: the imported base, or a previous stage."""
        init = self.jobs[(experiment, job)]["init"]
        if init is None:
            if experiment == N.ADAPTATION:  # θ₀ itself starts from the imported base
                return N.BASE_MODEL_CONFIG.format(model_name=self.base_name)
            return self.theta0_config
        return N.MODEL_CONFIG.format(experiment=experiment, job=init)

    def finetune_data(self, experiment: str, job: str, split: str) -> list[str]:
        """The parquet files of a job's ``train`` or ``dev`` data."""
        return [self.dataset_path(*t) for t in self.jobs[(experiment, job)][split]]

    def merge_inputs(self, experiment: str, variant: str) -> dict[str, str | list[str]]:
        """The input files of a merge: θ₀ and the task vectors (in the order of its spec's experts)
        and, for a dev-selected variant, the model config, the dev splits (in the order of
        ``devset_specs``) and, for NP, the experts' dev scores. Never a test split."""
        spec = self.variants[(experiment, variant)]
        out: dict[str, str | list[str]] = {
            "base": self.theta0_weights,
            "task_vectors": [self.taskvector_path(experiment, j) for j in spec["experts"]],
        }
        sel = spec.get("selection")
        if sel:
            out["model"] = N.BASE_MODEL_CONFIG.format(model_name=self.base_name)
            out["devsets"] = self.devset_files(experiment)
            if sel["metric"] == "np":
                out["reference"] = N.EXPERTS_DEV_SCORES.format(experiment=experiment)
        return out

    def merge_spec(self, experiment: str, variant: str) -> dict:
        """params.spec of the merge rule: the variant and, for a dev-selected one, its dev sets
        (in the order of the ``devsets`` input) and the decoding settings (``evaluation``)."""
        spec = dict(self.variants[(experiment, variant)])
        if spec.get("selection"):
            decoding = {k: v for k, v in self.evaluation_settings.items() if k != "bootstrap"}
            spec["selection"] = {**spec["selection"], "devsets": self.devsets[experiment], "decoding": decoding}
        spec["experiment"] = experiment
        return spec

    def devset_files(self, experiment: str) -> list[str]:
        """The dev split of every dev set of an experiment, in the order of ``devsets``."""
        return [self.dataset_path(experiment, d["subset"], "dev") for d in self.devsets.get(experiment, [])]

    def experts_dev_needed(self, experiment: str) -> bool:
        """Whether a merge of the experiment selects on NP, which needs the experts' dev scores."""
        return any(
            (v.get("selection") or {}).get("metric") == "np" for (e, _), v in self.variants.items() if e == experiment
        )

    def experts_dev_spec(self, experiment: str) -> dict:
        """params.spec of evaluate_experts_dev: each expert with its own dev sets."""
        own = self.reports[experiment]["expert_testsets"]
        dev = {d["testset"]: d for d in self.devsets.get(experiment, [])}
        return {
            "experiment": experiment,
            "experts": [{"model": job, "devsets": [dev[t] for t in own[job] if t in dev]} for job in own],
            **self.evaluation_settings,
        }

    def experts_dev_inputs(self, experiment: str) -> dict[str, list[str]]:
        """Weights of every expert and the dev splits (the order of ``experts_dev_spec``)."""
        spec = self.experts_dev_spec(experiment)
        return {
            "weights": [self.weights_path(experiment, e["model"]) for e in spec["experts"]],
            "devsets": [
                self.dataset_path(experiment, d["subset"], "dev") for e in spec["experts"] for d in e["devsets"]
            ],
        }

    def selected_variants(self, experiment: str) -> list[str]:
        """The dev-selected merge variants of an experiment (their merge infos hold the curve)."""
        return [v for (e, v), spec in self.variants.items() if e == experiment and spec.get("selection")]

    def import_request(self, native: bool = False) -> dict:
        """What the imported base folder (``native``: the uncropped one) must be made from."""
        from speechmerge.models.spec import import_request

        cfg = self.config["base_model"]
        return import_request(cfg["spec"], None if native else self.crop_seconds, int(self.config.get("seed", 0)))

    def import_stamp(self, native: bool = False) -> str:
        """The provenance file of an imported folder (``models.spec.stamp_name``), as a path pattern
        with the ``{model_name}`` wildcard (the import rules' output)."""
        from speechmerge.models.spec import stamp_name

        folder = N.NATIVE_MODEL_DIR if native else N.BASE_MODEL_DIR
        return f"{folder}/{stamp_name(self.import_request(native))}"

    def check_imports(self) -> None:
        """The imported folders may be written: none is a folder of the user's (PlanError)."""
        from speechmerge.models.spec import check_import_target

        for native in (False, True) if self.native_zeroshot else (False,):
            folder = (N.NATIVE_MODEL_DIR if native else N.BASE_MODEL_DIR).format(model_name=self.base_name)
            try:
                check_import_target(folder, self.import_request(native))
            except ValueError as err:
                raise PlanError(str(err)) from None

    def all_targets(self) -> list[str]:
        """Each experiment's report directory and its tables as HTML (for snakemake --report), and
        the provenance files of the imported base folders, so that a folder imported from
        another spec or context is rebuilt, never reused."""
        stamps = [self.import_stamp(native) for native in ((False, True) if self.native_zeroshot else (False,))]
        return [s.format(model_name=self.base_name) for s in stamps] + [
            d for e in self.experiments for d in (self.report_dir(e), N.REPORT_TABLES_DIR.format(experiment=e))
        ]


# ---------------------------------------------------------------------------------------
def merge_method_labels() -> dict[str, str]:
    """Name -> display label of every registered merging method (the ``label`` of its class)."""
    from speechmerge.merging import (
        REGISTRY,
        methods,  # noqa: F401  (imports register every method)
    )

    return {name: cls.label for name, cls in REGISTRY.items()}


def build_plan(config: dict, merge_methods: Iterable[str] | None = None) -> Plan:
    """Expand a (schema-validated) config into the plan; ``merge_methods`` = the names a merge may
    use (default: no check). Row labels of merges come from the method classes."""
    plan = Plan(config=config)
    experiments = config.get("experiments", {})
    if N.ADAPTATION in experiments:
        raise PlanError(f"experiments.{N.ADAPTATION}: this name is reserved for the context-adapted base's data")
    for name, exp in experiments.items():
        if not exp.get("enabled", True):
            continue
        kind = exp.get("kind", name)
        builder = {"multilingual": _plan_multilingual, "domains": _plan_domains, "peft": _plan_peft}.get(kind)
        if builder is None:
            raise PlanError(f"experiments.{name}: unknown kind {kind!r} (multilingual, domains, peft)")
        builder(plan, name, exp)
        if merge_methods is not None:
            for (e, v), spec in plan.variants.items():
                if e == name and spec["method"] not in merge_methods:
                    raise PlanError(
                        f"experiments.{name}.merges: unknown merge method {spec['method']!r}; "
                        f"available: {sorted(merge_methods)}"
                    )
        plan.reports[name]["default_merges"] = _default_merges(plan, name)
        plan.reports[name]["default_models"] = {  # the report row's model (unsuffixed with several seeds)
            v["method"]: N.merge_model(N.parse_seeded(variant)[0])
            for (e, variant), v in plan.variants.items()
            if e == name
            and not v.get("selection")
            and N.parse_seeded(variant)[0] in (v["method"], N.default_variant(v["method"]))
        }
        plan.reports[name]["context_s"] = plan.crop_seconds or 30
        plan.reports[name]["bootstrap"] = int((config.get("evaluation") or {}).get("bootstrap", 1000))
        plan.reports[name]["seed"] = int(config.get("seed", 0))
        plan.reports[name]["seeds"] = plan.seeds
        plan.reports[name]["selection"] = _selection_note(plan, name)
    if not plan.reports:
        raise PlanError("no experiment is enabled in config 'experiments'")
    _plan_adapted_base(plan)
    _check_path_names(plan)
    return plan


def _check_path_names(plan: Plan) -> None:
    """Every name that becomes a file or folder (``names``' patterns) is one safe path component,
    so no config value can make a job write, or replace, anything outside its folder."""
    from speechmerge.utils import UnsafePathError, check_component

    named = [(plan.base_name, "base_model.name")]
    named += [(e, f"experiments.{e}") for e in plan.namespaces]
    named += [(s, f"experiments.{e} (subset {s!r})") for (e, s, _) in plan.datasets]
    named += [(j, f"experiments.{e} (training job {j!r})") for (e, j) in plan.jobs]
    named += [(v, f"experiments.{e}.merges / sweeps (merge {v!r})") for (e, v) in plan.variants]
    named += [(m, f"experiments.{e} (model {m!r})") for (e, m, _) in plan.evaluations]
    for value, where in named:
        try:
            check_component(value, where)
        except UnsafePathError as err:
            raise PlanError(str(err)) from None


def _plan_adapted_base(plan: Plan) -> None:
    """θ₀: the base fine-tuned at the experiments' context on synthesised speech of languages no
    experiment evaluates, so that the crop and synthesiser adaptation every expert would learn is
    in θ₀ and not in the task vectors. Every fine-tuning job then starts from θ₀, task vectors are
    taken from it and merges are added to it (``Plan.theta0_weights``)."""
    cfg = plan.config.get("adapted_base") or {}
    if not cfg.get("enabled", False):
        return
    languages = list(cfg.get("languages") or [])
    if not languages:
        raise PlanError("adapted_base.languages: list at least one language")
    evaluated: dict[str, str] = {}
    for (exp, subset, split), ds in plan.datasets.items():
        evaluated.setdefault(ds["language"], f"experiments.{exp}")
    seen = [f"{lang} (in {evaluated[lang]})" for lang in languages if lang in evaluated]
    if seen:
        raise PlanError(
            f"adapted_base.languages: {', '.join(seen)}: the context-adapted base must not see a language "
            "an experiment trains or evaluates"
        )
    tasks = list(cfg.get("tasks") or ["transcribe"])
    domain = cfg.get("domain", "clean")
    for lang in languages:
        _add_dataset(
            plan,
            N.ADAPTATION,
            cfg,
            lang,
            language=lang,
            domain=domain,
            splits=("train", "dev"),
            where="adapted_base.domain",
        )
    _train_spec(
        plan,
        N.ADAPTATION,
        cfg,
        N.ADAPTATION_JOB,
        overrides=None,
        train=[(N.ADAPTATION, lang, "train") for lang in languages],
        dev=[(N.ADAPTATION, lang, "dev") for lang in languages],
        tasks=tasks,
        init=None,
    )


def start_rows(plan: Plan) -> list[dict]:
    """The rows every table opens with: zero-shot at the native 30 s context (when the
    experiments crop), zero-shot at the experiments' context, and the context-adapted base θ₀."""
    crop = plan.crop_seconds
    rows = []
    if plan.native_zeroshot:
        rows.append({"model": N.ZEROSHOT_NATIVE, "label": "Zero-shot (30 s)", "group": "baseline", "context_s": 30})
    rows.append(
        {
            "model": N.ZEROSHOT,
            "label": f"Zero-shot ({crop} s crop)" if crop is not None else "Zero-shot",
            "group": "baseline",
            "context_s": crop or 30,
        }
    )
    if plan.adapted_base:
        rows.append(
            {"model": N.ADAPTED, "label": "Context-adapted base θ₀", "group": "baseline", "context_s": crop or 30}
        )
    return rows


def _default_merges(plan: Plan, exp_name: str) -> dict[str, dict]:
    """method -> hyperparameters of its evaluated default merge (``{method}`` without selection,
    or ``{method}@defaults``; not a sweep point) as applied to the experiment's experts:
    N-dependent defaults such as LoRS' scaling = 1/N resolved by the method
    (``MergeMethod.resolved_hparams``). The report places the default on sweeps; the model each
    default is evaluated as is in the report spec's ``default_models``."""
    from speechmerge.merging import (
        REGISTRY,
        methods,  # noqa: F401  (imports register every method)
    )

    out = {}
    for (e, variant), spec in plan.variants.items():
        method = spec["method"]
        if e != exp_name or method not in REGISTRY or spec.get("selection"):
            continue
        if N.parse_seeded(variant)[0] not in (method, N.default_variant(method)):
            continue
        merge = REGISTRY[method](**spec["hparams"])  # checked by _add_merges (_check_merge_hparams)
        out[method] = merge.resolved_hparams(len(spec["experts"]) or 1)
    return out


def _domain_transforms(config: dict, domain: str, where: str) -> list[dict]:
    catalog = config.get("acoustic_domains", {})
    if domain not in catalog:
        raise PlanError(f"{where}: unknown acoustic domain {domain!r}; defined in acoustic_domains: {sorted(catalog)}")
    return copy.deepcopy(catalog[domain] or [])


def _add_dataset(
    plan: Plan,
    exp_name: str,
    exp: dict,
    subset: str,
    *,
    language: str,
    domain: str,
    splits: tuple[str, ...],
    voice_profile: str = "adult",
    where: str,
) -> None:
    config = plan.config
    data_cfg = exp.get("data", {})
    source = data_cfg.get("source", "synth")
    # acoustic domains are rendered only for synthesised speech; real data keeps its own
    transforms = _domain_transforms(config, domain, where) if source == "synth" else []
    for split in splits:
        sizes = data_cfg.get(split, {})
        plan.datasets[(exp_name, subset, split)] = {
            "experiment": exp_name,
            "subset": subset,
            "language": language,
            "domain": domain,
            "transforms": transforms,
            "split": split,
            "sentences": sizes.get("sentences"),
            "renderings": int(sizes.get("renderings", 1)),
            "seed": int(config.get("seed", 0)),
            "voice_profile": voice_profile,
            "source": source,
            **_source_options(data_cfg, source, subset, split, where=f"experiments.{exp_name}.data"),
        }


HUB_SOURCES = ("covost2", "fleurs", "common_voice")
HUB_KEYS = ("hf_name", "hf_config", "data_dir")


def _check_source_keys(data_cfg: dict, source: str, where: str) -> None:
    """Every ``data`` key is used by the chosen source, or the plan stops naming it (a key that
    would be ignored, e.g. ``renderings`` of recorded speech or ``hf_name`` of a manifest)."""
    unused = []
    if source != "manifest" and data_cfg.get("manifests"):
        unused.append("manifests")
    if source not in HUB_SOURCES:
        unused += [k for k in HUB_KEYS if data_cfg.get(k)]
    if source != "synth":
        unused += [
            f"{split}.renderings" for split in SPLITS if int((data_cfg.get(split) or {}).get("renderings", 1)) != 1
        ]
    if unused:
        raise PlanError(
            f"config key '{where}': {', '.join(unused)} {'is' if len(unused) == 1 else 'are'} not used by "
            f"data source {source!r}; remove {'it' if len(unused) == 1 else 'them'} "
            "(renderings: synthesised speech only; manifests: source manifest; hf_name, hf_config, data_dir: hub sources)"
        )


def _source_options(data_cfg: dict, source: str, subset: str, split: str, *, where: str) -> dict:
    """Extra keys of a real-data source: a manifest TSV per subset/split, or a hub dataset."""
    _check_source_keys(data_cfg, source, where)
    if source == "manifest":
        try:
            return {"manifest": data_cfg["manifests"][subset][split]}
        except KeyError:
            raise PlanError(f"{where}.manifests: no manifest for subset {subset!r}, split {split!r}") from None
    if source in HUB_SOURCES:
        return {k: data_cfg[k] for k in HUB_KEYS if data_cfg.get(k)}
    return {}


def _testsets(plan: Plan, exp_name: str, subset: str, language: str, tasks) -> list[str]:
    names = []
    for task in tasks:
        if task == "translate" and language == "en":
            continue
        name = N.testset(subset, task)
        plan.testsets[(exp_name, name)] = {"subset": subset, "task": task, "language": language}
        names.append(name)
    return names


def _train_spec(
    plan: Plan,
    exp_name: str,
    exp: dict,
    job: str,
    *,
    overrides: dict | None,
    train: list[tuple[str, str, str]],
    dev: list[tuple[str, str, str]],
    tasks,
    init: str | None,
    method: str = "full",
    seed: int | None = None,
) -> None:
    """One training job; ``seed``: its training seed (None: ``training.seed``, else ``seed``)."""
    spec = _merge_dicts(plan.config.get("training", {}), exp.get("train", {}), overrides)
    spec.update(
        {
            "experiment": exp_name,
            "job": job,
            "method": method,
            "tasks": list(tasks),
            "seed": int(spec.get("seed", plan.config.get("seed", 0)) if seed is None else seed),
            "checkpoint_dir": N.CHECKPOINT_DIR.format(experiment=exp_name, job=job),
            "train": train,
            "dev": dev,
            "init": init,  # None = the imported base model, else the job whose model is the start
        }
    )
    spec.setdefault("peft", {})
    plan.jobs[(exp_name, job)] = spec


SELECTION_METRICS = {"multilingual": "np", "domains": "mean_error"}


def _selection_note(plan: Plan, exp_name: str) -> str:
    """How the merge rows' hyperparameters were chosen (the tables' provenance footnote)."""
    selected = plan.selected_variants(exp_name)
    if not selected:
        note = "hyperparameters: each method's default (docs/methods.md)"
    else:
        metric = plan.variants[(exp_name, selected[0])]["selection"]["metric"]
        what = "NP against the experts" if metric == "np" else "mean WER/CER"
        note = (
            f"merging hyperparameters chosen on the dev split ({what}; grids in merge_selection.csv); "
            "test sets never take part in the choice"
        )
    if plan.reports[exp_name].get("sweeps"):
        note += "; sweep points are decoded on the test set and shown as test-set sweeps, not used to choose a row"
    return note


def _selection_grid(exp_name: str, exp: dict, method: str) -> dict:
    """The grid a method's dev selection searches: the experiment's ``selection.grids`` entry
    (``{}`` = no selection) or the method's own ``grid``; {} when selection is off."""
    from speechmerge.merging import (
        REGISTRY,
        methods,  # noqa: F401  (imports register every method)
    )

    sel = exp.get("selection") or {}
    if not sel.get("enabled", True):
        return {}
    entry = (sel.get("grids") or {}).get(method)
    cls = REGISTRY.get(method)
    if entry is False:  # no selection: the method's defaults
        grid = {}
    elif entry is None:  # absent or null: the method's own grid
        grid = {p: list(v) for p, v in (cls.grid if cls is not None else {}).items()}
    else:
        grid = dict(entry)
    if cls is not None:
        unknown = sorted(set(grid) - set(cls.defaults))
        if unknown:
            raise PlanError(
                f"experiments.{exp_name}.selection.grids.{method}: unknown hyperparameter(s) {unknown}; "
                f"known: {sorted(cls.defaults)}"
            )
    for param, values in grid.items():
        if not isinstance(values, list) or not values:
            raise PlanError(f"experiments.{exp_name}.selection.grids.{method}.{param}: give a non-empty list of values")
        _check_distinct(values, f"experiments.{exp_name}.selection.grids.{method}.{param}")
    return grid


def _check_distinct(values: list, key: str) -> None:
    """Values of a grid or sweep are distinct as the tables show them (``format_value``: 1 and 1.0
    are one point, which would give two identical rows)."""
    seen: dict[str, object] = {}
    for v in values:
        shown = format_value(v)
        if shown in seen:
            raise PlanError(
                f"config key '{key}': value {v!r} is listed twice ({list(values)}"
                + (
                    f"; {seen[shown]!r} and {v!r} are the same point"
                    if seen[shown] != v or type(seen[shown]) is not type(v)
                    else ""
                )
                + "); list each value once"
            )
        seen[shown] = v


def _default_rows(exp_name: str, exp: dict) -> set[str]:
    """Methods whose paper-default merge is also a row (``selection.default_rows``: true or a list)."""
    rows = (exp.get("selection") or {}).get("default_rows", False)
    merges = list(exp.get("merges", []))
    if rows is True:
        return set(merges)
    if not rows:
        return set()
    unknown = sorted(set(rows) - set(merges))
    if unknown:
        raise PlanError(
            f"experiments.{exp_name}.selection.default_rows: {unknown} not listed in experiments.{exp_name}.merges"
        )
    return set(rows)


def _check_merge_hparams(exp_name: str, method: str, hparams: dict, grid: dict) -> None:
    """The configured hyperparameters and every grid point are values the method accepts."""
    from speechmerge.merging import REGISTRY
    from speechmerge.merging.grid import expand_grid

    if method not in REGISTRY:
        return  # build_plan names an unknown method

    def check(hp: dict, key: str) -> None:
        try:
            REGISTRY[method](**hp)
        except (ValueError, KeyError, TypeError) as err:
            msg = err.args[0] if isinstance(err, KeyError) and err.args else err
            raise PlanError(f"config key 'experiments.{exp_name}.{key}.{method}': {msg}") from None

    check(hparams, "hparams")
    for point in expand_grid(grid):
        check({**hparams, **point}, "selection.grids")


def _add_merges(
    plan: Plan, exp_name: str, exp: dict, experts: list[str], *, seed: int | None = None, tag: int | None = None
) -> tuple[list[dict], list[dict]]:
    """Merge variants: ``merges`` (method names), ``hparams`` (method -> overrides), ``selection``
    (dev-split grids, paper-default rows) and ``sweeps`` (test-set sweeps); ``seed``: the training
    seed of ``experts`` (None: config ``seed``), ``tag``: the seed the variant names carry
    (``names.seeded``; None with one training seed)."""
    from speechmerge.merging import (
        REGISTRY,
        methods,  # noqa: F401  (imports register every method)
    )

    rows, sweeps = [], []
    seed = int(plan.config.get("seed", 0)) if seed is None else seed
    overrides = exp.get("hparams", {}) or {}
    unused = sorted(set(overrides) - set(exp.get("merges", [])))
    if unused:
        raise PlanError(f"experiments.{exp_name}.hparams: {unused} not listed in experiments.{exp_name}.merges")
    sel_cfg = exp.get("selection") or {}
    # grids of methods the experiment does not merge are ignored (a preset may shorten `merges`
    # without repeating the grids it inherits), but a name that is no method is an error
    unknown_grids = sorted(set(sel_cfg.get("grids") or {}) - set(REGISTRY))
    if unknown_grids:
        raise PlanError(
            f"experiments.{exp_name}.selection.grids: {unknown_grids} are no merge methods; known: {sorted(REGISTRY)}"
        )
    kind = exp.get("kind", exp_name)
    metric = sel_cfg.get("metric") or SELECTION_METRICS.get(kind, "mean_error")
    default_rows = _default_rows(exp_name, exp)
    labels = merge_method_labels()
    for method in exp.get("merges", []):
        grid = _selection_grid(exp_name, exp, method) if method in REGISTRY else {}
        hparams = dict(overrides.get(method) or {})
        clash = sorted(set(grid) & set(hparams))
        if clash:
            raise PlanError(
                f"experiments.{exp_name}.hparams.{method}: {clash} fixed here and searched by "
                f"selection.grids.{method}; keep one"
            )
        _check_merge_hparams(exp_name, method, hparams, grid)
        name = N.seeded(method, tag)
        spec = {"method": method, "hparams": hparams, "seed": seed, "experts": experts, "variant": name}
        if grid:
            spec["selection"] = {"grid": grid, "metric": metric, "split": "dev"}
        plan.variants[(exp_name, name)] = spec
        label = labels.get(method, method)
        row = {"model": N.merge_model(name), "label": label, "group": "merge", "method": method}
        if grid:
            row["selected_on"] = "dev"
        rows.append(row)
        if grid and method in default_rows:
            variant = N.seeded(N.default_variant(method), tag)
            plan.variants[(exp_name, variant)] = {
                "method": method, "hparams": hparams, "seed": seed, "experts": experts, "variant": variant,
            }  # fmt: skip
            rows.append(
                {
                    "model": N.merge_model(variant),
                    "label": f"{label} (paper default)",
                    "group": "merge",
                    "method": method,
                }
            )
    seen_sweeps: dict[tuple[str, str], int] = {}
    for k, sweep in enumerate(exp.get("sweeps", [])):
        method, param = sweep["method"], sweep["param"]
        if (method, param) in seen_sweeps:
            raise PlanError(
                f"config key 'experiments.{exp_name}.sweeps[{k}]': sweeps[{seen_sweeps[(method, param)]}] already "
                f"sweeps {method}.{param}; give all its values in one sweep"
            )
        seen_sweeps[(method, param)] = k
        _check_distinct(sweep["values"], f"experiments.{exp_name}.sweeps[{k}] ({param})")
        points = []
        for value in sweep["values"]:
            variant = N.seeded(N.variant(method, param, value), tag)
            hparams = {**dict(overrides.get(method) or {}), param: value}
            plan.variants[(exp_name, variant)] = {
                "method": method,
                "hparams": hparams,
                "seed": seed,
                "experts": experts,
                "variant": variant,
            }
            points.append({"value": value, "model": N.merge_model(variant)})
        sweeps.append({"method": method, "param": param, "points": points})
    return rows, sweeps


def _sequential(
    plan: Plan, exp_name: str, exp: dict, subsets: list[str], tasks, *, seed: int | None = None, tag: int | None = None
) -> list[dict]:
    seq = exp.get("sequential", {}) or {}
    if not seq.get("enabled", False):
        return []
    order = seq.get("order") or subsets
    unknown = [s for s in order if s not in subsets]
    if unknown:
        raise PlanError(f"experiments.{exp_name}.sequential.order: {unknown} not among {subsets}")
    repeated = sorted({s for s in order if order.count(s) > 1})
    missing = [s for s in subsets if s not in order]
    if repeated or missing:  # the row is labelled "Sequential": training on every subset once
        raise PlanError(
            f"experiments.{exp_name}.sequential.order: list every subset exactly once ({subsets} in any order); "
            + "; ".join(
                ([f"listed more than once: {repeated}"] if repeated else [])
                + ([f"missing: {missing}"] if missing else [])
            )
        )
    stages = []
    for k, subset in enumerate(order, start=1):
        job = N.seeded(N.sequential_job(k), tag)
        _train_spec(
            plan,
            exp_name,
            exp,
            job,
            overrides=seq.get("train"),
            train=[(exp_name, subset, "train")],
            dev=[(exp_name, subset, "dev")],
            tasks=tasks,
            init=None if k == 1 else N.seeded(N.sequential_job(k - 1), tag),
            seed=seed,
        )
        stages.append({"model": job, "subset": subset})
    return stages


def _experts_baselines_merges(
    plan: Plan,
    name: str,
    exp: dict,
    subsets: list[str],
    tasks,
    *,
    own_tests: dict[str, list[str]],
    all_tests: list[str],
    forgetting_tests: list[str],
    experts_label: str,
    joint_label: str,
    per_task: bool = False,
):
    """One expert per subset (``per_task``: per subset x task), the joint and sequential baselines,
    every merge; their evaluations.

    Experts are evaluated on their own test sets, intermediate sequential stages on
    ``forgetting_tests``, every other model on ``all_tests``; all of them once per training seed
    (``plan.seeds``). Returns the expert table ``{label: (job, own test sets)}`` of the first
    seed, the report rows, sweeps and sequential stages (``combine_seeds``) and every expert
    job's own test sets.
    """
    plan.devsets[name] = [{"testset": t, **plan.testsets[(name, t)]} for tests in own_tests.values() for t in tests]
    per_seed = {}
    for seed in plan.seeds:
        per_seed[seed] = _seed_models(
            plan,
            name,
            exp,
            subsets,
            tasks,
            seed=seed,
            own_tests=own_tests,
            forgetting_tests=forgetting_tests,
            experts_label=experts_label,
            joint_label=joint_label,
            per_task=per_task,
        )
    first = per_seed[plan.seeds[0]]
    units = first[0]
    plan.experts[name] = [job for job, _ in units.values()]
    plan.seed_experts[name] = {seed: [job for job, _ in out[0].values()] for seed, out in per_seed.items()}
    rows = start_rows(plan) + combine_seeds(plan, {seed: out[1] for seed, out in per_seed.items()})
    sweeps = [
        {**sw, "points": combine_seeds(plan, {seed: out[2][k]["points"] for seed, out in per_seed.items()})}
        for k, sw in enumerate(first[2])
    ]
    stages = combine_seeds(plan, {seed: out[3] for seed, out in per_seed.items()})
    evaluated = [r["model"] for r in start_rows(plan)] + [m for out in per_seed.values() for m in out[4]]
    for model in dict.fromkeys(evaluated):
        plan.evaluations += [(name, model, t) for t in all_tests]
    expert_testsets = {job: tests for out in per_seed.values() for job, tests in out[0].values()}
    return units, rows, sweeps, stages, expert_testsets


def _seed_models(
    plan: Plan,
    name: str,
    exp: dict,
    subsets: list[str],
    tasks,
    *,
    seed: int,
    own_tests: dict[str, list[str]],
    forgetting_tests: list[str],
    experts_label: str,
    joint_label: str,
    per_task: bool,
):
    """The experts, joint and sequential baselines and merges of one training seed, and the
    evaluations of experts and intermediate stages. Returns (expert table, rows, sweeps, stages,
    the models to evaluate on every test set)."""
    tag = plan.seed_tag(seed)
    units: dict[str, tuple[str, list[str]]] = {}
    for subset in subsets:
        # (label, its test sets, its tasks): expert-de, or expert-de-transcribe + expert-de-translate
        groups = (
            [(t, [t], [N.testset_task(t)]) for t in own_tests[subset]]
            if per_task
            else [(subset, list(own_tests[subset]), list(tasks))]
        )
        for label, tests, job_tasks in groups:
            job = N.seeded(N.expert_job(label), tag)
            units[label] = (job, tests)
            _train_spec(
                plan,
                name,
                exp,
                job,
                overrides=None,
                train=[(name, subset, "train")],
                dev=[(name, subset, "dev")],
                tasks=job_tasks,
                init=None,
                seed=None if tag is None else seed,
            )
    experts = [job for job, _ in units.values()]
    for job, tests in units.values():
        plan.evaluations += [(name, job, t) for t in tests]
    rows = [
        {
            "model": "experts",
            "label": experts_label,
            "group": "baseline",
            "per_testset": {t: job for job, tests in units.values() for t in tests},
        },
    ]
    evaluated = []
    joint = exp.get("joint", {}) or {}
    if "order" in joint:
        raise PlanError(
            f"config key 'experiments.{name}.joint.order': the joint baseline trains on every subset at once, "
            "so it has no order (sequential.order sets the order of sequential training)"
        )
    if joint.get("enabled", True):
        job = N.seeded(N.JOINT, tag)
        _train_spec(
            plan,
            name,
            exp,
            job,
            overrides=joint.get("train"),
            train=[(name, s, "train") for s in subsets],
            dev=[(name, s, "dev") for s in subsets],
            tasks=tasks,
            init=None,
            seed=None if tag is None else seed,
        )
        rows.append({"model": job, "label": joint_label, "group": "baseline"})
        evaluated.append(job)
    stages = _sequential(plan, name, exp, subsets, tasks, seed=None if tag is None else seed, tag=tag)
    if stages:
        rows.append({"model": stages[-1]["model"], "label": "Sequential", "group": "baseline"})
        evaluated.append(stages[-1]["model"])
        for st in stages[:-1]:
            plan.evaluations += [(name, st["model"], t) for t in forgetting_tests]
    merge_rows, sweeps = _add_merges(plan, name, exp, experts, seed=None if tag is None else seed, tag=tag)
    rows += merge_rows
    evaluated += [r["model"] for r in merge_rows] + [p["model"] for s in sweeps for p in s["points"]]
    return units, rows, sweeps, stages, evaluated


def combine_seeds(plan: Plan, per_seed: dict[int, list[dict]]) -> list[dict]:
    """Rows (or sweep points, sequential stages) of every training seed as one list: with one
    seed, that seed's rows; with several, each row named by its unsuffixed model and listing the
    models of its seeds in ``seeds`` (seed -> model, or seed -> {"per_testset": ...} for the
    composite experts row)."""
    seeds = list(per_seed)
    if len(seeds) == 1:
        return per_seed[seeds[0]]
    out = []
    for k, row in enumerate(per_seed[seeds[0]]):
        combined = {key: v for key, v in row.items() if key != "per_testset"}
        combined["model"] = N.parse_seeded(row["model"])[0]
        combined["seeds"] = {
            seed: (
                {"per_testset": per_seed[seed][k]["per_testset"]}
                if "per_testset" in row
                else per_seed[seed][k]["model"]
            )
            for seed in seeds
        }
        out.append(combined)
    return out


def _plan_multilingual(plan: Plan, name: str, exp: dict) -> None:
    languages = list(exp["languages"])
    tasks = list(exp.get("tasks", ["transcribe"]))
    domain = exp.get("domain", "clean")
    for lang in languages:
        _add_dataset(
            plan, name, exp, lang, language=lang, domain=domain, splits=SPLITS, where=f"experiments.{name}.domain"
        )
    testsets = {lang: _testsets(plan, name, lang, lang, tasks) for lang in languages}
    all_tests = [t for lang in languages for t in testsets[lang]]

    asr_tests = [t for t in all_tests if N.testset_task(t) == "transcribe"]
    units, rows, sweeps, stages, expert_testsets = _experts_baselines_merges(
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
    plan.reports[name] = {
        "experiment": name,
        "kind": "multilingual",
        "subsets": languages,
        "tasks": tasks,
        "rows": rows,
        "normalise_to": "experts",
        "sweeps": sweeps,
        "sequential": stages,
        "experts": {label: job for label, (job, _) in units.items()},
        "expert_testsets": expert_testsets,
        "ood_subsets": [],
        "retention_subsets": [],
        "baseline_for_significance": N.JOINT if any(r["model"] == N.JOINT for r in rows) else N.ZEROSHOT,
        "peft_methods": [],
        "peft_cross_subsets": [],
    }


def _plan_domains(plan: Plan, name: str, exp: dict) -> None:
    language = exp["language"]
    train_domains = list(exp["train_domains"])
    ood = list(exp.get("ood_domains", []))
    overlap = set(train_domains) & set(ood)
    if overlap:
        raise PlanError(f"experiments.{name}: domains {sorted(overlap)} are both train_domains and ood_domains")
    for d in train_domains:
        _add_dataset(
            plan, name, exp, d, language=language, domain=d, splits=SPLITS, where=f"experiments.{name}.train_domains"
        )
    for d in ood:
        _add_dataset(
            plan, name, exp, d, language=language, domain=d, splits=("test",), where=f"experiments.{name}.ood_domains"
        )
    retention = []
    for lang in exp.get("retention_languages", []):
        subset = N.retention_subset(lang)
        _add_dataset(
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
    id_tests = [t for d in train_domains for t in _testsets(plan, name, d, language, tasks)]
    other_tests = [t for d in ood for t in _testsets(plan, name, d, language, tasks)]
    other_tests += [t for s in retention for t in _testsets(plan, name, s, N.retention_language(s), tasks)]
    all_tests = id_tests + other_tests

    units, rows, sweeps, stages, expert_testsets = _experts_baselines_merges(
        plan,
        name,
        exp,
        train_domains,
        tasks,
        own_tests={d: [N.testset(d, "transcribe")] for d in train_domains},
        all_tests=all_tests,
        forgetting_tests=id_tests,
        experts_label="ID-FT (per-domain experts)",
        joint_label="Full-FT (all domains)",
    )
    plan.reports[name] = {
        "experiment": name,
        "kind": "domains",
        "subsets": train_domains,
        "tasks": tasks,
        "rows": rows,
        "normalise_to": "experts",
        "sweeps": sweeps,
        "sequential": stages,
        "experts": {label: job for label, (job, _) in units.items()},
        "expert_testsets": expert_testsets,
        "ood_subsets": ood,
        "retention_subsets": retention,
        "baseline_for_significance": N.JOINT if any(r["model"] == N.JOINT for r in rows) else N.ZEROSHOT,
        "peft_methods": [],
        "peft_cross_subsets": [],
    }


def _plan_peft(plan: Plan, name: str, exp: dict) -> None:
    language = exp["language"]
    ind = exp["in_domain"]
    _add_dataset(
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
        _add_dataset(
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
    tests = _testsets(plan, name, ind["name"], language, tasks)
    for c in cross:
        tests += _testsets(plan, name, c, language, tasks)
    methods = exp.get("methods", {})
    unknown = [m for m in methods if m not in PEFT_METHODS]
    if unknown:
        raise PlanError(f"experiments.{name}.methods: unknown method {unknown[0]!r}; known: {list(PEFT_METHODS)}")
    per_seed: dict[int, list[dict]] = {}
    for seed in plan.seeds:
        tag = plan.seed_tag(seed)
        per_seed[seed] = []
        for method, overrides in methods.items():
            job = N.seeded(method, tag)
            _train_spec(
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
            per_seed[seed].append({"model": job, "label": PEFT_LABELS[method], "group": "peft", "method": method})
    rows = start_rows(plan) + combine_seeds(plan, per_seed)
    evaluated = [r["model"] for r in start_rows(plan)] + [r["model"] for out in per_seed.values() for r in out]
    for model in evaluated:
        plan.evaluations += [(name, model, t) for t in tests]
    plan.experts[name] = []
    plan.seed_experts[name] = {seed: [] for seed in plan.seeds}
    plan.reports[name] = {
        "experiment": name,
        "kind": "peft",
        "subsets": [ind["name"]],
        "tasks": tasks,
        "rows": rows,
        "normalise_to": None,
        "sweeps": [],
        "sequential": [],
        "experts": {},
        "expert_testsets": {r["model"]: list(tests[:1]) for out in per_seed.values() for r in out},
        "ood_subsets": [],
        "retention_subsets": [],
        "baseline_for_significance": "full" if "full" in methods else N.ZEROSHOT,
        "peft_methods": list(methods),
        "peft_cross_subsets": cross,
    }
