"""Training jobs of the plan: one job spec per fine-tuned model (``add_training_job``), the
experts, joint and sequential baselines of an experiment once per training seed
(``experts_baselines_merges``), and the rows every table opens with (``start_rows``)."""

from __future__ import annotations

from speechmerge import names as N
from speechmerge.config import deep_update
from speechmerge.numerics import DEFAULT_PRECISION
from speechmerge.plan.core import Plan, PlanError
from speechmerge.plan.merges import add_merges


def start_rows(plan: Plan, experiment: str) -> list[dict]:
    """The rows every table opens with: zero-shot at the native 30 s context (when the
    experiments crop), zero-shot at the experiments' context, and the context-adapted base θ₀
    (when the experiment starts from it)."""
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
    if plan.uses_theta0(experiment):
        rows.append(
            {"model": N.ADAPTED, "label": "Context-adapted base θ₀", "group": "baseline", "context_s": crop or 30}
        )
    return rows


def add_training_job(
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
    spec: dict = {"precision": plan.config.get("precision", DEFAULT_PRECISION)}
    for layer in (plan.config.get("training"), exp.get("train"), overrides):
        spec = deep_update(spec, layer or {})
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
    from speechmerge.devices import stage_device

    device, _ = stage_device(plan.config, "training")
    spec.pop("device", None)
    if device != "cpu":  # the CPU default leaves the specs as they were
        spec["device"] = device
        spec["jobs_per_gpu"] = int((plan.config.get("gpu") or {}).get("jobs_per_gpu", 1))
    plan.jobs[(exp_name, job)] = spec


def sequential_stages(
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
        add_training_job(
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


def experts_baselines_merges(
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
        per_seed[seed] = seed_models(
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
    rows = start_rows(plan, name) + combine_seeds(plan, {seed: out[1] for seed, out in per_seed.items()})
    sweeps = [
        {**sw, "points": combine_seeds(plan, {seed: out[2][k]["points"] for seed, out in per_seed.items()})}
        for k, sw in enumerate(first[2])
    ]
    stages = combine_seeds(plan, {seed: out[3] for seed, out in per_seed.items()})
    evaluated = [r["model"] for r in start_rows(plan, name)] + [m for out in per_seed.values() for m in out[4]]
    for model in dict.fromkeys(evaluated):
        plan.evaluations += [(name, model, t) for t in all_tests]
    expert_testsets = {job: tests for out in per_seed.values() for job, tests in out[0].values()}
    return units, rows, sweeps, stages, expert_testsets


def seed_models(
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
            add_training_job(
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
        add_training_job(
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
    stages = sequential_stages(plan, name, exp, subsets, tasks, seed=None if tag is None else seed, tag=tag)
    if stages:
        rows.append({"model": stages[-1]["model"], "label": "Sequential", "group": "baseline"})
        evaluated.append(stages[-1]["model"])
        for st in stages[:-1]:
            plan.evaluations += [(name, st["model"], t) for t in forgetting_tests]
    merge_rows, sweeps = add_merges(plan, name, exp, experts, seed=None if tag is None else seed, tag=tag)
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
