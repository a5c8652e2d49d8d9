"""Checks of a built plan that the JSON schema cannot make, run when the DAG is built.

``check_plan(plan, corpus=...)`` fails ``snakemake -n`` (before any training) with a
``PlanError`` naming the config key, for what would otherwise fail only when its job runs:

* ``audio.max_seconds`` outside what the importer accepts (whole seconds in 1..30);
* every merge variant's hyperparameters (``experiments.E.hparams.M``, ``experiments.E.sweeps[i]``),
  checked by building the method: each method validates its own arguments;
* every training job's settings and PEFT hyperparameters (LoRA ``r``, AdaLoRA ``target_r`` <=
  ``init_r`` and its schedule, S2-LoRA ``l1_weight`` >= 0 and ``threshold`` in [0, 1), dropouts),
  checked by the trainer's own ``TrainSpec.from_dict``;
* the text corpus of synthesised data: ``speechmerge.data.corpus.validate_corpus`` (duplicate
  sentence ids, empty cells, ...), the language of each data set, and the number of sentences
  requested per split against what the corpus has.
"""

from __future__ import annotations

import os
from typing import Any

from speechmerge import names as N
from speechmerge.plan.core import Plan, PlanError

# Keys of a job spec that the plan adds for the DAG, not for the trainer (see rules/finetune.smk).
_DAG_KEYS = ("train", "dev", "init")


def check_plan(plan: Plan, *, corpus: str | os.PathLike | None = None) -> None:
    """Raise ``PlanError`` naming the config key of the first problem found (see module doc)."""
    check_audio(plan.config)
    check_merges(plan)
    check_training(plan)
    if corpus is not None:
        check_data(plan, corpus)


def check_audio(config: dict) -> None:
    from speechmerge.models.crop import check_max_seconds

    value = (config.get("audio") or {}).get("max_seconds")
    if value is not None:
        try:
            check_max_seconds(value)
        except ValueError as err:
            raise PlanError(f"config key 'audio.max_seconds': {err}") from None


def _variant_key(plan: Plan, experiment: str, spec: dict) -> str:
    method, variant = spec["method"], N.parse_seeded(spec["variant"])[0]
    if variant == method:
        return f"experiments.{experiment}.hparams.{method}"
    sweeps = plan.config["experiments"][experiment].get("sweeps", [])
    for i, sweep in enumerate(sweeps):
        if sweep.get("method") == method and variant.startswith(f"{method}@{sweep.get('param')}="):
            return f"experiments.{experiment}.sweeps[{i}] ({sweep.get('param')})"
    return f"experiments.{experiment}.sweeps"


def check_merges(plan: Plan) -> None:
    from speechmerge.merging import get_method

    for (experiment, variant), spec in plan.variants.items():
        try:
            method = get_method(spec["method"], spec.get("hparams") or {})
            method.resolved_hparams(len(spec.get("experts") or []) or 1)
        except (ValueError, KeyError, TypeError) as err:
            msg = err.args[0] if isinstance(err, KeyError) and err.args else err
            raise PlanError(f"config key '{_variant_key(plan, experiment, spec)}': merge {variant!r}: {msg}") from None


def _job_key(plan: Plan, experiment: str, job: str, method: str) -> str:
    exp = plan.config["experiments"][experiment]
    if exp.get("kind") == "peft":
        return f"experiments.{experiment}.methods.{method}"
    job = N.parse_seeded(job)[0]
    if job == "joint":
        return f"experiments.{experiment}.joint.train"
    if job.startswith("seq-"):
        return f"experiments.{experiment}.sequential.train"
    return f"experiments.{experiment}.train"


def check_training(plan: Plan) -> None:
    from speechmerge.training.spec import TrainSpec

    for (experiment, job), spec in plan.jobs.items():
        spec = {k: v for k, v in spec.items() if k not in _DAG_KEYS}
        try:
            TrainSpec.from_dict(spec)
        except (ValueError, KeyError, TypeError) as err:
            msg = err.args[0] if isinstance(err, KeyError) and err.args else err
            key = _job_key(plan, experiment, job, spec.get("method", "full"))
            raise PlanError(f"config key '{key}' (over 'training'): job {experiment}/{job}: {msg}") from None


def check_data(plan: Plan, corpus: str | os.PathLike) -> None:
    """The corpus is valid and has the sentences every synthesised split asks for."""
    from speechmerge.data.corpus import LANGUAGES, check_corpus, load_corpus

    synth = {k: v for k, v in plan.datasets.items() if v.get("source", "synth") == "synth"}
    if not synth:
        return
    try:
        check_corpus(corpus)
    except ValueError as err:
        raise PlanError(f"config key 'corpus': {err}") from None
    counts: dict[str, Any] = load_corpus(corpus)["split"].value_counts().to_dict()
    for (experiment, subset, split), spec in synth.items():
        if spec["language"] not in LANGUAGES:
            raise PlanError(
                f"experiments.{experiment}: language {spec['language']!r} of data set {subset!r} is not in "
                f"the corpus {corpus} (it has {', '.join(LANGUAGES)})"
            )
        want, have = spec.get("sentences"), int(counts.get(split, 0))
        if want is not None and int(want) > have:
            raise PlanError(
                f"config key 'experiments.{experiment}.data.{split}.sentences': asks for {want} sentences, "
                f"the {split} split of the corpus {corpus} has {have}"
            )


__all__ = ["check_plan", "check_audio", "check_merges", "check_training", "check_data"]
