# Config validation, the plan of the DAG (speechmerge.plan), path patterns (speechmerge.names),
# wildcard constraints and the few helpers the rule files share.
import os
import re

from speechmerge import names as N
from speechmerge.merging import REGISTRY
from speechmerge.merging import methods as _register_methods  # noqa: F401
from speechmerge.plan import build_plan
from speechmerge.plan.checks import check_plan
from speechmerge.data.adapters import manifest_audio_paths
from speechmerge.data.readers import get_reader
from speechmerge.report import report_captions
from speechmerge.config import corpus_path, validate_config
from speechmerge.numerics import apply_environment as apply_numerics_environment
from speechmerge.jobresources import (
    estimate as estimate_resources,
    resource_args,
    unset_variables as unset_profile_variables,
)
from snakemake.exceptions import WorkflowError

validate_config(config)
# The code path of the CPU math libraries (numerics.cpu_isa): set here, inherited by every job.
apply_numerics_environment(config)
# The corpus: the configured path in the working directory, else (the default name) the corpus
# shipped with the package, else relative to this workflow (speechmerge.config.corpus_path).
CORPUS = corpus_path(config.get("corpus"), workflow.basedir)
PLAN = build_plan(config, merge_methods=set(REGISTRY))
# Hyperparameters, PEFT settings, audio.max_seconds, the corpus and the sentence counts are
# checked now, so `snakemake -n` names a bad config key before any job runs.
check_plan(PLAN, corpus=CORPUS)
# A folder under resources/models that no import wrote belongs to the user: never used, never replaced.
PLAN.check_imports()
THREADS = config.get("threads", {})
# The software environment of every rule (`--sdm conda`); `make env` builds the same one.
CONDA_ENV = "../envs/speechmerge.yaml"


def alternatives(values):
    """A wildcard constraint that matches exactly the given names."""
    values = sorted(set(values)) or ["__none__"]
    return "|".join(re.escape(v) for v in values)


def merged_weights(path):
    """Merged weights are temporary unless `keep_merged_models` is set."""
    return path if config.get("keep_merged_models", False) else temp(path)


def dataset_manifest(wc):
    """The local manifest a split is read from, or None."""
    return PLAN.datasets[(wc.experiment, wc.subset, wc.split)].get("manifest")


def manifest_audio(wc):
    """The manifest and every audio file it names: editing either reruns the checksum job."""
    manifest = dataset_manifest(wc)
    if manifest is None or not os.path.isfile(manifest):
        return [manifest] if manifest else []  # a missing manifest: Snakemake names it
    return [manifest] + [str(p) for p in manifest_audio_paths(manifest)]


def split_inputs(wc):
    """What a split is made from: the corpus (synthesised speech), the checksum of a manifest's
    audio (a manifest split) or the files that list a corpus's split on disk (root: its TSVs,
    not each clip); a hub dataset is named by params only."""
    spec = PLAN.datasets[(wc.experiment, wc.subset, wc.split)]
    source = spec.get("source", "synth")
    if source == "synth":
        return {"corpus": CORPUS}
    if spec.get("root"):
        reader = get_reader(source)
        options = {k: spec[k] for k in reader.options if spec.get(k)}
        files = reader.index_files(spec["root"], spec["language"], wc.split, **options)
        return {"index": [str(p) for p in files]}
    if dataset_manifest(wc):
        return {
            "audio_checksum": N.AUDIO_CHECKSUM.format(
                experiment=wc.experiment, subset=wc.subset, split=wc.split
            )
        }
    return {}


# Resources (mem_mb, runtime in minutes, gpu) from the base model's size and the config
# (speechmerge.jobresources); --set-resources or a profile's set-resources override them.
def job_resource(rule_name, key):
    return lambda wc: estimate_resources(
        rule_name, config, **resource_args(PLAN, rule_name, wc)
    )[key]


def import_resource(name, key):
    """Resources of importing base model ``name`` (the import rules of models.smk)."""
    return estimate_resources(
        "import_model", config, base_spec=PLAN.bases[name]["spec"]
    )[key]


def import_rule_name(name, native):
    """import_model or import_native_model for the run base, with the base name added for others."""
    which = "import_native_model" if native else "import_model"
    if name == PLAN.base_name:
        return which
    safe = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return f"{which}_{safe}"


def _profile_resource_expressions():
    settings = workflow.resource_settings
    exprs = list(getattr(settings.default_resources, "args", None) or [])
    for overrides in (settings.overwrite_resources or {}).values():
        exprs += [getattr(r, "raw", r) for r in overrides.values()]
    return exprs


_unset = unset_profile_variables(_profile_resource_expressions())
if _unset:
    raise WorkflowError(
        f"the profile's resources use {', '.join('$' + n for n in _unset)}, which "
        f"{'is' if len(_unset) == 1 else 'are'} not set: export {' '.join(n + '=...' for n in _unset)} "
        "(an empty value leaves the account or partition to SLURM; see README, Running on SLURM)"
    )


wildcard_constraints:
    experiment=alternatives(PLAN.namespaces),
    subset=alternatives(s for (_, s, _) in PLAN.datasets),
    split="|".join(N.SPLITS),
    job=alternatives([j for (_, j) in PLAN.jobs] + [j for (_, j) in PLAN.imported]),
    variant=alternatives(v for (_, v) in PLAN.variants),
    testset=alternatives(t for (_, t) in PLAN.testsets),
    model=alternatives(m for (_, m, _) in PLAN.evaluations),


# The config hash is not a param: a param change makes Snakemake rerun the job, and adding a merge
# method to the config must not retrain every expert. Scripts record it (speechmerge.utils.job_spec).
