"""The ``Plan``: what the DAG holds, and the paths and job specs the rules ask it for.

``build_plan`` (``speechmerge.plan.build``) fills it from a validated config; the experiment
kinds (``speechmerge.experiments``) add their datasets, jobs, merges and evaluations through
the helpers of ``speechmerge.plan.data``, ``.training`` and ``.merges``.

Names (docs/ARCHITECTURE.md): datasets are (experiment, subset, split); training jobs are
``expert-{subset}`` (``expert-{subset}-{task}`` with ``experts_per_task``), ``joint``,
``seq-{k}`` or a PEFT method name; experts a study imports are ``expert-{name}``; merge variants
are ``{method}`` or ``{method}@{param}={value}``; evaluated models are ``zeroshot``, a job, or
``merge-{variant}``; test sets are ``{subset}-{task}``. With several training seeds (config
``seeds``) every seeded name ends in ``~s{seed}`` (``names.seeded``), and a report row keeps its
unsuffixed ``model`` as its name and lists the models of its seeds in ``seeds``.

Base models: the run's ``base_model`` and any an experiment names for itself (``base_model`` in
the experiment). Every base is imported at the experiments' context (``audio.max_seconds``) and,
when that crops, also at Whisper's native 30 s for the zero-shot row. The context-adapted base
θ₀ (``adapted_base``) is made from the run's base; experiments on another base start from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from speechmerge import names as N
from speechmerge.numerics import DEFAULT_PRECISION


class PlanError(ValueError):
    """A config that passes the schema but does not describe a runnable experiment."""


@dataclass
class Plan:
    config: dict
    datasets: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    jobs: dict[tuple[str, str], dict] = field(default_factory=dict)
    # experts an experiment takes from elsewhere (merge-study): (experiment, job) -> their spec
    imported: dict[tuple[str, str], dict] = field(default_factory=dict)
    # the experts of the first training seed (what task-vector cosines and spectra are drawn from)
    experts: dict[str, list[str]] = field(default_factory=dict)
    seed_experts: dict[str, dict[int, list[str]]] = field(default_factory=dict)  # experiment -> seed -> experts
    variants: dict[tuple[str, str], dict] = field(default_factory=dict)
    testsets: dict[tuple[str, str], dict] = field(default_factory=dict)
    evaluations: list[tuple[str, str, str]] = field(default_factory=list)
    reports: dict = field(default_factory=dict)  # experiment -> experiments.base.ReportSpec
    # experiment -> the dev sets merges are selected on ({"testset", "subset", "task", "language"})
    devsets: dict[str, list[dict]] = field(default_factory=dict)
    # base model name -> {"spec", "key"}: every base an experiment starts from (the run's first)
    bases: dict[str, dict] = field(default_factory=dict)
    # experiment -> the name of its base model (absent: the run's)
    experiment_base: dict[str, str] = field(default_factory=dict)
    # experiments whose models were not made from θ₀ (merge-study experts): they start from their base
    from_base: set[str] = field(default_factory=set)
    # manifests a config must still name: (data key, subset, split, why), reported all at once
    missing_manifests: list[tuple[str, str, str, str]] = field(default_factory=list)

    # ----- names and paths -------------------------------------------------------------
    @property
    def base_name(self) -> str:
        """The run's base model (``base_model.name``)."""
        return self.config["base_model"]["name"]

    def base_of(self, experiment: str) -> str:
        """The base model an experiment starts from (θ₀'s data and job: the run's)."""
        return self.experiment_base.get(experiment, self.base_name)

    @property
    def experiments(self) -> list[str]:
        return list(self.reports)

    def report_spec(self, experiment: str) -> dict:
        """The report rule's ``params.spec`` (``ReportSpec.as_dict``)."""
        return self.reports[experiment].as_dict()

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
        return self.experiments + ([N.ADAPTATION] if self.theta0_needed else [])

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
        """Whether the run makes the context-adapted base θ₀ (``adapted_base.enabled``)."""
        return bool((self.config.get("adapted_base") or {}).get("enabled", False))

    def uses_theta0(self, experiment: str) -> bool:
        """Whether an experiment starts from θ₀: the run makes one, the experiment is on the run's
        base, and it trains its models (a merge-study's experts were fine-tuned from the base)."""
        return self.adapted_base and experiment not in self.from_base and self.base_of(experiment) == self.base_name

    @property
    def theta0_needed(self) -> bool:
        """Whether any experiment starts from θ₀ (else it is not made)."""
        return any(self.uses_theta0(e) for e in self.experiments)

    def base_config(self, experiment: str, *, native: bool = False) -> str:
        """config.json of an experiment's imported base (``native``: at 30 s)."""
        pattern = N.NATIVE_MODEL_CONFIG if native else N.BASE_MODEL_CONFIG
        return pattern.format(model_name=self.base_of(experiment))

    def base_weights(self, experiment: str, *, native: bool = False) -> str:
        pattern = N.NATIVE_MODEL_WEIGHTS if native else N.BASE_MODEL_WEIGHTS
        return pattern.format(model_name=self.base_of(experiment))

    def theta0_config(self, experiment: str) -> str:
        """config.json of an experiment's θ₀: the context-adapted base, else its imported base."""
        if self.uses_theta0(experiment):
            return N.MODEL_CONFIG.format(experiment=N.ADAPTATION, job=N.ADAPTATION_JOB)
        return self.base_config(experiment)

    def theta0_weights(self, experiment: str) -> str:
        """Weights of an experiment's θ₀, what its task vectors are taken from and merges added to."""
        if self.uses_theta0(experiment):
            return N.MODEL_WEIGHTS.format(experiment=N.ADAPTATION, job=N.ADAPTATION_JOB)
        return self.base_weights(experiment)

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
            return self.base_weights(experiment)
        if model == N.ZEROSHOT_NATIVE:
            return self.base_weights(experiment, native=True)
        if model == N.ADAPTED:
            return self.theta0_weights(experiment)
        variant = N.merge_variant(model)
        if variant is not None:
            return self.merged_path(experiment, variant)
        if (experiment, model) in self.jobs or (experiment, model) in self.imported:
            return N.MODEL_WEIGHTS.format(experiment=experiment, job=model)
        raise KeyError(f"experiment {experiment!r} has no model {model!r}")

    def eval_model_config(self, experiment: str, model: str) -> str:
        """config.json of the architecture an evaluated model is loaded into (its context)."""
        return self.base_config(experiment, native=model == N.ZEROSHOT_NATIVE)

    def model_testsets(self, experiment: str, model: str) -> list[str]:
        """The test sets a model is evaluated on, in plan order, without repeats."""
        return list(dict.fromkeys(t for e, m, t in self.evaluations if e == experiment and m == model))

    def evaluated_models(self, experiment: str) -> list[str]:
        return list(dict.fromkeys(m for e, m, _ in self.evaluations if e == experiment))

    def report_dir(self, experiment: str) -> str:
        return N.REPORT_DIR.format(experiment=experiment)

    # ----- what the report rule needs --------------------------------------------------
    def report_inputs(self, experiment: str) -> dict[str, list[str]]:
        from speechmerge.training.peft.base import get_peft_method

        models = self.evaluated_models(experiment)
        jobs = [j for (e, j) in self.jobs if e == experiment]
        peft_jobs = [j for j in jobs if get_peft_method(self.jobs[(experiment, j)]["method"]).ranks]
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
        from speechmerge.devices import stage_device

        settings = dict(self.config.get("evaluation") or {})
        settings.setdefault("dtype", self.config.get("precision", DEFAULT_PRECISION))
        device, _ = stage_device(self.config, "evaluation")
        settings.pop("device", None)
        if device != "cpu":  # the CPU default leaves the specs as they were
            settings["device"] = device
            settings["jobs_per_gpu"] = int((self.config.get("gpu") or {}).get("jobs_per_gpu", 1))
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
        """config.json of the model a job starts from: θ₀ (θ₀ itself: the imported base), or a
        previous stage."""
        init = self.jobs[(experiment, job)]["init"]
        if init is None:
            if experiment == N.ADAPTATION:  # θ₀ itself starts from the imported base
                return N.BASE_MODEL_CONFIG.format(model_name=self.base_name)
            return self.theta0_config(experiment)
        return N.MODEL_CONFIG.format(experiment=experiment, job=init)

    def finetune_data(self, experiment: str, job: str, split: str) -> list[str]:
        """The parquet files of a job's ``train`` or ``dev`` data."""
        return [self.dataset_path(*t) for t in self.jobs[(experiment, job)][split]]

    def import_expert_inputs(self, experiment: str, job: str) -> dict[str, str]:
        """An imported expert's base: the folder it is checked against (and an adapter applied to)."""
        return {"base": self.base_config(experiment)}

    def import_expert_spec(self, experiment: str, job: str) -> dict:
        """params.spec of the import_expert rule."""
        return {**self.imported[(experiment, job)], "max_seconds": self.crop_seconds}

    def merge_inputs(self, experiment: str, variant: str) -> dict[str, str | list[str]]:
        """The input files of a merge: θ₀ and the task vectors (in the order of its spec's experts)
        and, for a dev-selected variant, the model config, the dev splits (in the order of
        ``devset_specs``) and, for NP, the experts' dev scores. Never a test split."""
        spec = self.variants[(experiment, variant)]
        out: dict[str, str | list[str]] = {
            "base": self.theta0_weights(experiment),
            "task_vectors": [self.taskvector_path(experiment, j) for j in spec["experts"]],
        }
        sel = spec.get("selection")
        if sel:
            out["model"] = self.base_config(experiment)
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
        device = self.merging_device
        if device != "cpu":
            spec["device"] = device
            spec["jobs_per_gpu"] = int((self.config.get("gpu") or {}).get("jobs_per_gpu", 1))
        return spec

    @property
    def merging_device(self) -> str:
        from speechmerge.devices import stage_device

        return stage_device(self.config, "merging")[0]

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
        own = self.reports[experiment].expert_testsets
        dev = {d["testset"]: d for d in self.devsets.get(experiment, [])}
        return {
            "experiment": experiment,
            "experts": [{"model": job, "devsets": [dev[t] for t in own[job] if t in dev]} for job in own],
            **self.evaluation_settings,
        }

    def experts_dev_inputs(self, experiment: str) -> dict[str, list[str] | str]:
        """Weights of every expert, the dev splits (the order of ``experts_dev_spec``) and the
        architecture they are loaded into."""
        spec = self.experts_dev_spec(experiment)
        return {
            "weights": [self.weights_path(experiment, e["model"]) for e in spec["experts"]],
            "devsets": [
                self.dataset_path(experiment, d["subset"], "dev") for e in spec["experts"] for d in e["devsets"]
            ],
            "model": self.base_config(experiment),
        }

    def taskvector_cosines_inputs(self, experiment: str) -> dict[str, str | list[str]]:
        """The imported base, θ₀ and every expert of an experiment (its first seed's)."""
        return {
            "base": self.base_weights(experiment),
            "theta0": self.theta0_weights(experiment),
            "experts": [N.MODEL_WEIGHTS.format(experiment=experiment, job=j) for j in self.experts[experiment]],
        }

    def selected_variants(self, experiment: str) -> list[str]:
        """The dev-selected merge variants of an experiment (their merge infos hold the curve)."""
        return [v for (e, v), spec in self.variants.items() if e == experiment and spec.get("selection")]

    # ----- imported base models --------------------------------------------------------
    def imports(self) -> list[tuple[str, bool]]:
        """(base name, native) of every folder the import rules write: each base at the
        experiments' context and, with a crop, at 30 s too."""
        natives = (False, True) if self.native_zeroshot else (False,)
        return [(name, native) for name in self.bases for native in natives]

    def import_request(self, name: str | None = None, native: bool = False) -> dict:
        """What an imported base folder (``native``: the uncropped one) must be made from."""
        from speechmerge.models.spec import import_request

        base = self.bases[name or self.base_name]
        return import_request(base["spec"], None if native else self.crop_seconds, int(self.config.get("seed", 0)))

    def import_stamp(self, name: str | None = None, native: bool = False) -> str:
        """The provenance file of an imported folder (``models.spec.stamp_name``)."""
        from speechmerge.models.spec import stamp_name

        folder = N.NATIVE_MODEL_DIR if native else N.BASE_MODEL_DIR
        return folder.format(model_name=name or self.base_name) + "/" + stamp_name(self.import_request(name, native))

    def import_spec(self, name: str, native: bool = False) -> dict:
        """params.spec of the import rules."""
        return {
            "spec": self.bases[name]["spec"],
            "max_seconds": None if native else self.crop_seconds,
            "seed": int(self.config.get("seed", 0)),
        }

    def check_imports(self) -> None:
        """The imported folders may be written: none is a folder of the user's (PlanError)."""
        from speechmerge.models.spec import check_import_target

        for name, native in self.imports():
            folder = (N.NATIVE_MODEL_DIR if native else N.BASE_MODEL_DIR).format(model_name=name)
            try:
                check_import_target(folder, self.import_request(name, native), key=self.bases[name]["key"])
            except ValueError as err:
                raise PlanError(str(err)) from None

    def all_targets(self) -> list[str]:
        """Each experiment's report directory and its tables as HTML (for snakemake --report), and
        the provenance files of the imported base folders, so that a folder imported from
        another spec or context is rebuilt, never reused."""
        stamps = [self.import_stamp(name, native) for name, native in self.imports()]
        return stamps + [
            d for e in self.experiments for d in (self.report_dir(e), N.REPORT_TABLES_DIR.format(experiment=e))
        ]
