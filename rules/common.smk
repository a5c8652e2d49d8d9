# Config validation and the plan of the DAG (speechmerge.plan); path and parameter helpers.
import os
import re

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


def _alternatives(values):
    values = sorted(set(values)) or ["__none__"]
    return "|".join(re.escape(v) for v in values)


wildcard_constraints:
    model_name=re.escape(PLAN.base_name),
    experiment=_alternatives(PLAN.experiments),
    subset=_alternatives(s for (_, s, _) in PLAN.datasets),
    split="train|dev|test",
    job=_alternatives(j for (_, j) in PLAN.jobs),
    variant=_alternatives(v for (_, v) in PLAN.variants),
    testset=_alternatives(t for (_, t) in PLAN.testsets),
    model=_alternatives(m for (_, m, _) in PLAN.evaluations),


def base_files():
    """The imported base model, as the two files its rule declares."""
    return {
        "model": f"{PLAN.base_dir}/config.json",
        "weights": f"{PLAN.base_dir}/model.safetensors",
    }


def job_model_file(experiment, job):
    """config.json of a job's model directory (None = the imported base)."""
    if job is None:
        return base_files()["model"]
    return f"{PLAN.model_dir(experiment, job)}/config.json"


def dataset_files(triples):
    return [PLAN.dataset_path(*t) for t in triples]


# The config hash is not a param: a param change makes Snakemake rerun the job, and adding a merge
# method to the config must not retrain every expert. Scripts record it (speechmerge.utils.job_spec).
