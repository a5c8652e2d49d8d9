"""``build_plan``: a validated config -> the ``Plan``. Each enabled experiment is planned by
its kind (``speechmerge.experiments``), then the context-adapted base θ₀ is added and every name
that becomes a path is checked."""

from __future__ import annotations

from typing import Iterable

from speechmerge import names as N
from speechmerge.experiments.base import get_kind
from speechmerge.plan.core import Plan, PlanError
from speechmerge.plan.data import add_dataset, check_manifests
from speechmerge.plan.merges import default_merges, selection_note
from speechmerge.plan.training import add_training_job


def build_plan(config: dict, merge_methods: Iterable[str] | None = None) -> Plan:
    """Expand a (schema-validated) config into the plan; ``merge_methods`` = the names a merge may
    use (default: no check). Row labels of merges come from the method classes."""
    plan = Plan(config=config)
    _check_devices(config)
    plan.bases[plan.base_name] = {"spec": config["base_model"]["spec"], "key": "base_model"}
    experiments = config.get("experiments", {})
    if N.ADAPTATION in experiments:
        raise PlanError(f"experiments.{N.ADAPTATION}: this name is reserved for the context-adapted base's data")
    for name, exp in experiments.items():
        if not exp.get("enabled", True):
            continue
        try:
            kind = get_kind(exp.get("kind", ""))
        except KeyError as err:
            raise PlanError(f"config key 'experiments.{name}.kind': {err.args[0]}") from None
        _experiment_base(plan, name, exp)
        if not kind.trains:
            plan.from_base.add(name)
        plan.reports[name] = kind.plan(plan, name, exp)
        if merge_methods is not None:
            for (e, v), spec in plan.variants.items():
                if e == name and spec["method"] not in merge_methods:
                    raise PlanError(
                        f"experiments.{name}.merges: unknown merge method {spec['method']!r}; "
                        f"available: {sorted(merge_methods)}"
                    )
        spec = plan.reports[name]
        spec.default_merges = default_merges(plan, name)
        spec.default_models = {  # the report row's model (unsuffixed with several seeds)
            v["method"]: N.merge_model(N.parse_seeded(variant)[0])
            for (e, variant), v in plan.variants.items()
            if e == name
            and not v.get("selection")
            and N.parse_seeded(variant)[0] in (v["method"], N.default_variant(v["method"]))
        }
        spec.context_s = plan.crop_seconds or 30
        spec.bootstrap = int((config.get("evaluation") or {}).get("bootstrap", 1000))
        spec.seed = int(config.get("seed", 0))
        spec.seeds = plan.seeds if kind.trains else [int(config.get("seed", 0))]
        spec.selection = selection_note(plan, name)
    if not plan.reports:
        raise PlanError("no experiment is enabled in config 'experiments'")
    check_manifests(plan)
    _plan_adapted_base(plan)
    _check_path_names(plan)
    return plan


def _experiment_base(plan: Plan, name: str, exp: dict) -> None:
    """An experiment's own ``base_model`` (absent: the run's): registered for import; two
    experiments may share it, but one name cannot stand for two specs."""
    own = exp.get("base_model")
    if not own:
        return
    key = f"experiments.{name}.base_model"
    known = plan.bases.get(own["name"])
    if known is not None and known["spec"] != own["spec"]:
        raise PlanError(
            f"config key '{key}': name {own['name']!r} is already the base of {known['key']} with spec "
            f"{known['spec']!r}; give the other spec ({own['spec']!r}) another name"
        )
    plan.bases.setdefault(own["name"], {"spec": own["spec"], "key": key})
    if own["name"] != plan.base_name:
        plan.experiment_base[name] = own["name"]


def _check_path_names(plan: Plan) -> None:
    """Every name that becomes a file or folder (``names``' patterns) is one safe path component,
    so no config value can make a job write, or replace, anything outside its folder."""
    from speechmerge.utils import UnsafePathError, check_component

    named = [(name, f"{b['key']}.name") for name, b in plan.bases.items()]
    named += [(e, f"experiments.{e}") for e in plan.namespaces]
    named += [(s, f"experiments.{e} (subset {s!r})") for (e, s, _) in plan.datasets]
    named += [(j, f"experiments.{e} (training job {j!r})") for (e, j) in plan.jobs]
    named += [(j, f"experiments.{e}.experts ({j!r})") for (e, j) in plan.imported]
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
    if not plan.theta0_needed:
        return
    languages = list(cfg.get("languages") or [])
    if not languages:
        raise PlanError("adapted_base.languages: list at least one language")
    evaluated: dict[str, str] = {}
    for (exp, subset, split), ds in plan.datasets.items():
        if plan.uses_theta0(exp):
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
        add_dataset(
            plan,
            N.ADAPTATION,
            cfg,
            lang,
            language=lang,
            domain=domain,
            splits=("train", "dev"),
            where="adapted_base.domain",
        )
    add_training_job(
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


def _check_devices(config: dict) -> None:
    """The device settings name devices this machine has (``speechmerge.devices``), and float16
    (CUDA only) is asked only of a stage that runs on CUDA."""
    from speechmerge.devices import check_devices, stage_device

    try:
        check_devices(config)
    except ValueError as err:
        raise PlanError(str(err)) from None
    for stage, key in (("training", "precision"), ("evaluation", "dtype")):
        if (config.get(stage) or {}).get(key) == "float16" and not stage_device(config, stage)[0].startswith("cuda"):
            raise PlanError(
                f"config key '{stage}.{key}': float16 runs on CUDA only ({stage} device is "
                f"{stage_device(config, stage)[0]!r}); use bfloat16 on the CPU"
            )
