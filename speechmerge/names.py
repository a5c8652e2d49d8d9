"""Every name and path the pipeline builds or parses, in one place.

Names (docs/ARCHITECTURE.md): a test set is ``{subset}-{task}``; a retention subset of the domains
experiment is ``lang_{code}``; training jobs are ``expert-{subset}`` (``expert-{subset}-{task}``
with ``experts_per_task``), ``joint``, ``seq-{k}`` or a PEFT method name; a merge variant is
``{method}`` (dev-selected when the method has a grid, else its defaults), ``{method}@defaults``
(the paper-default merge beside a dev-selected one) or ``{method}@{param}={value}`` (a test-set
sweep point); an evaluated
model is ``zeroshot``, a job, or ``merge-{variant}``. With several training seeds (config
``seeds``), every seeded job, merge variant and evaluated model carries the suffix ``~s{seed}``
(``expert-de~s1``, ``ties@scaling=0.5~s1``, ``merge-ties~s1``); with one seed names have no suffix.

Paths: the patterns below carry Snakemake wildcards (``{experiment}``, ``{job}``, ...). The rule
files use them as they are; the plan fills them with ``str.format``. This module imports nothing
heavy, so workflow scripts and the Snakefile can use it freely.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TASKS = ("transcribe", "translate")
SPLITS = ("train", "dev", "test")

ZEROSHOT = "zeroshot"  # the base model at the experiments' context (audio.max_seconds)
ZEROSHOT_NATIVE = "zeroshot-native"  # the base model at Whisper's native 30 s context
ADAPTED = "adapted-base"  # the context-adapted base θ₀ as an evaluated model
# The models every fine-tuned model is compared with: none of them is trained on the experiment.
START_MODELS = (ZEROSHOT_NATIVE, ZEROSHOT, ADAPTED)
# θ₀'s data and training job live under this name in the experiment wildcard (never a user
# experiment's name): results/data/adapted-base/{language}/{split}.parquet,
# results/models/adapted-base/theta0/.
ADAPTATION = "adapted-base"
ADAPTATION_JOB = "theta0"
JOINT = "joint"
MERGE_PREFIX = "merge-"
EXPERT_PREFIX = "expert-"
SEQUENTIAL_PREFIX = "seq-"
RETENTION_PREFIX = "lang_"
SEED_MARK = "~s"  # joins a name and its training seed: expert-de~s1 (never in a method or subset name)

# ----- paths (relative to the working directory) -------------------------------------------
BASE_MODEL_DIR = "resources/models/{model_name}"
BASE_MODEL_CONFIG = BASE_MODEL_DIR + "/config.json"
BASE_MODEL_WEIGHTS = BASE_MODEL_DIR + "/model.safetensors"
BASE_MODEL_INFO = BASE_MODEL_DIR + "/import_info.json"
# + "/" + models.spec.stamp_name(request): names what the folder was imported from (spec, context)
# The base model uncropped (30 s), for the native zero-shot row when audio.max_seconds crops.
NATIVE_MODEL_DIR = "resources/models/{model_name}-native"
NATIVE_MODEL_CONFIG = NATIVE_MODEL_DIR + "/config.json"
NATIVE_MODEL_WEIGHTS = NATIVE_MODEL_DIR + "/model.safetensors"
NATIVE_MODEL_INFO = NATIVE_MODEL_DIR + "/import_info.json"
DATASET = "results/data/{experiment}/{subset}/{split}.parquet"
AUDIO_CHECKSUM = "results/data/{experiment}/{subset}/{split}.audio.json"
MODEL_DIR = "results/models/{experiment}/{job}"
MODEL_CONFIG = MODEL_DIR + "/config.json"
MODEL_WEIGHTS = MODEL_DIR + "/model.safetensors"
TRAIN_INFO = MODEL_DIR + "/train_info.json"
EXPERT_INFO = MODEL_DIR + "/expert_info.json"  # an expert a merge-study imports (models.experts)
RANK_ALLOCATION = MODEL_DIR + "/rank_allocation.json"
CHECKPOINT_DIR = "results/checkpoints/{experiment}/{job}"
TASK_VECTOR = "results/taskvectors/{experiment}/{job}.safetensors"
# Inter-expert cosines of task vectors taken from the base and from θ₀ (speechmerge.training.cosines).
TASKVECTOR_COSINES = "results/taskvectors/{experiment}/cosines.json"
MERGED_WEIGHTS = "results/merged/{experiment}/{variant}.safetensors"
MERGE_INFO = "results/merged/{experiment}/{variant}.json"
EVAL_PREFIX = "results/eval/{experiment}/{model}"
HYPOTHESES = EVAL_PREFIX + ".jsonl"
SCORES = EVAL_PREFIX + ".json"
# Every expert decoded on its own dev sets: the reference of NP-based dev selection.
EXPERTS_DEV_SCORES = "results/eval-dev/{experiment}/experts.json"
EXPERTS_DEV_HYPOTHESES = "results/eval-dev/{experiment}/experts.jsonl"
REPORT_DIR = "results/report/{experiment}"
REPORT_TABLES_DIR = "results/report_tables/{experiment}"  # the tables as HTML pages (snakemake --report)

MODEL_FILE_SUFFIXES = (".json", ".safetensors")


def model_dir_of(path: str | os.PathLike) -> Path:
    """A model directory given as the directory or as a file inside it (rules name its
    ``config.json`` or ``model.safetensors``; an output file need not exist yet)."""
    p = Path(path)
    return p.parent if p.suffix in MODEL_FILE_SUFFIXES or p.is_file() else p


# ----- test sets ---------------------------------------------------------------------------
def testset(subset: str, task: str) -> str:
    return f"{subset}-{task}"


def split_testset(name: str) -> tuple[str, str]:
    """``"de-translate"`` -> ``("de", "translate")`` (subsets may hold '-' only before the task)."""
    subset, _, task = name.rpartition("-")
    return subset, task


def testset_task(name: str) -> str:
    return split_testset(name)[1]


# ----- subsets -----------------------------------------------------------------------------
def retention_subset(language: str) -> str:
    """The retention subset of a language in the domains experiment: ``lang_{code}``."""
    return f"{RETENTION_PREFIX}{language}"


def retention_language(subset: str) -> str | None:
    """``"lang_es"`` -> ``"es"``; None for a subset that is not a retention set."""
    return subset[len(RETENTION_PREFIX) :] if subset.startswith(RETENTION_PREFIX) else None


# ----- jobs and models ---------------------------------------------------------------------
def expert_job(unit: str) -> str:
    """``expert-{subset}`` or, with one expert per task, ``expert-{subset}-{task}``."""
    return f"{EXPERT_PREFIX}{unit}"


def sequential_job(stage: int) -> str:
    return f"{SEQUENTIAL_PREFIX}{stage}"


def merge_model(variant: str) -> str:
    """The evaluated model of a merge variant: ``merge-{variant}``."""
    return f"{MERGE_PREFIX}{variant}"


def merge_variant(model: str) -> str | None:
    """``"merge-ties@scaling=0.5"`` -> ``"ties@scaling=0.5"``; None for a model that is no merge."""
    return model[len(MERGE_PREFIX) :] if model.startswith(MERGE_PREFIX) else None


# ----- training seeds ----------------------------------------------------------------------
def seeded(name: str, seed: int | None) -> str:
    """``name`` of training seed ``seed``: ``expert-de~s1``; ``seed=None`` (a run with one seed)
    leaves the name as it is."""
    if seed is None:
        return name
    if SEED_MARK in name:
        raise ValueError(f"{name!r} already carries a seed ({SEED_MARK}...)")
    return f"{name}{SEED_MARK}{int(seed)}"


def parse_seeded(name: str) -> tuple[str, int | None]:
    """``"merge-ties@scaling=0.5~s1"`` -> ``("merge-ties@scaling=0.5", 1)``; ``"joint"`` -> ``("joint", None)``."""
    base, mark, seed = name.rpartition(SEED_MARK)
    if not mark:
        return name, None
    try:
        return base, int(seed)
    except ValueError:
        raise ValueError(f"{name!r}: expected {{name}}{SEED_MARK}{{seed}} with an integer seed") from None


# ----- merge variants ----------------------------------------------------------------------
def format_value(value: Any) -> str:
    """How a sweep value appears in a variant name: 0.30 -> '0.3', 1.0 -> '1', 'x' -> 'x'."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"{value:g}"
    return str(value)


DEFAULTS_SUFFIX = "@defaults"


def default_variant(method: str) -> str:
    """``{method}@defaults``: the paper-default merge of a method whose ``{method}`` row is dev-selected."""
    return f"{method}{DEFAULTS_SUFFIX}"


def variant(method: str, param: str | None = None, value: Any = None) -> str:
    """``{method}`` (defaults) or ``{method}@{param}={value}`` (a sweep point)."""
    return method if param is None else f"{method}@{param}={format_value(value)}"


def parse_variant(name: str) -> tuple[str, str | None, str | None]:
    """``"lors@scaling=0.4"`` -> ``("lors", "scaling", "0.4")``; ``"ties"`` and
    ``"ties@defaults"`` -> ``("ties", None, None)``; a seed suffix is dropped (``"ties~s1"`` ->
    ``("ties", None, None)``)."""
    method, at, point = parse_seeded(name)[0].partition("@")
    if not at or at + point == DEFAULTS_SUFFIX:
        return method, None, None
    param, eq, value = point.partition("=")
    if not eq or not param:
        raise ValueError(f"merge variant {name!r}: expected {{method}}@{{param}}={{value}}")
    return method, param, value


def sweep_table_name(method: str, param: str) -> str:
    """Report table and figure stem of a sweep: ``sweep_{method}_{param}``."""
    return f"sweep_{method}_{param}"
