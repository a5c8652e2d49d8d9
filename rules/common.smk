# Config validation, the plan of the DAG (speechmerge.plan), path patterns (speechmerge.names),
# wildcard constraints and the few helpers the rule files share.
import os
import re

from speechmerge import names as N
from speechmerge.merging import REGISTRY
from speechmerge.merging import methods as _register_methods  # noqa: F401
from speechmerge.plan import build_plan
from speechmerge.plan_checks import check_plan
from speechmerge.data.adapters import manifest_audio_paths
from speechmerge.report import report_captions
from speechmerge.config import validate_config

validate_config(config)
# Relative input paths in the config are read from the working directory if present there,
# else from the repository (so a run in another --directory still finds the checked-in corpus).
CORPUS = config.get("corpus", "resources/text/corpus.tsv")
if not os.path.isabs(CORPUS) and not os.path.exists(CORPUS):
    CORPUS = os.path.join(workflow.basedir, CORPUS)
PLAN = build_plan(config, merge_methods=set(REGISTRY))
# Hyperparameters, PEFT settings, audio.max_seconds, the corpus and the sentence counts are
# checked now, so `snakemake -n` names a bad config key before any job runs.
check_plan(PLAN, corpus=CORPUS)
THREADS = config.get("threads", {})
# The software environment of every rule (`--sdm conda`); `make env` builds the same one.
CONDA_ENV = "../envs/speechmerge.yaml"
BASE_MODEL = {
    "model": N.BASE_MODEL_CONFIG.format(model_name=PLAN.base_name),
    "weights": N.BASE_MODEL_WEIGHTS.format(model_name=PLAN.base_name),
}


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
    """What a split is made from: the corpus (synthesised speech) or the checksum of a manifest's
    audio (a manifest split); a hub dataset is named by params only."""
    source = PLAN.datasets[(wc.experiment, wc.subset, wc.split)].get("source", "synth")
    if source == "synth":
        return {"corpus": CORPUS}
    if dataset_manifest(wc):
        return {
            "audio_checksum": N.AUDIO_CHECKSUM.format(
                experiment=wc.experiment, subset=wc.subset, split=wc.split
            )
        }
    return {}


wildcard_constraints:
    model_name=re.escape(PLAN.base_name),
    experiment=alternatives(PLAN.experiments),
    subset=alternatives(s for (_, s, _) in PLAN.datasets),
    split="|".join(N.SPLITS),
    job=alternatives(j for (_, j) in PLAN.jobs),
    variant=alternatives(v for (_, v) in PLAN.variants),
    testset=alternatives(t for (_, t) in PLAN.testsets),
    model=alternatives(m for (_, m, _) in PLAN.evaluations),


# The config hash is not a param: a param change makes Snakemake rerun the job, and adding a merge
# method to the config must not retrain every expert. Scripts record it (speechmerge.utils.job_spec).
