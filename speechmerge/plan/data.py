"""Datasets and test sets of the plan: which split of which subset is made from what source
(synthesised speech with an acoustic domain's transforms, a manifest, a hub corpus) and the
test sets ``{subset}-{task}`` a model is scored on."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

from speechmerge import names as N
from speechmerge.languages import whisper_language
from speechmerge.names import SPLITS
from speechmerge.plan.core import Plan, PlanError


def domain_transforms(config: dict, domain: str, where: str) -> list[dict]:
    catalog = config.get("acoustic_domains", {})
    if domain not in catalog:
        raise PlanError(f"{where}: unknown acoustic domain {domain!r}; defined in acoustic_domains: {sorted(catalog)}")
    return copy.deepcopy(catalog[domain] or [])


def add_dataset(
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
    try:  # any Whisper language; synthesised speech also needs it in the corpus (plan.checks)
        whisper_language(language)
    except ValueError as err:
        experiment = "adapted_base" if exp_name == N.ADAPTATION else f"experiments.{exp_name}"
        raise PlanError(f"config key '{experiment}': data set {subset!r}: language {err}") from None
    # acoustic domains are rendered only for synthesised speech; real data keeps its own
    transforms = domain_transforms(config, domain, where) if source == "synth" else []
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
            **({"hours": float(sizes["hours"])} if sizes.get("hours") is not None else {}),
            **({"on_bad_audio": "skip"} if data_cfg.get("on_bad_audio") == "skip" else {}),
            **({"speakers": "disjoint"} if data_cfg.get("speakers") == "disjoint" else {}),
            "renderings": int(sizes.get("renderings", 1)),
            "seed": int(config.get("seed", 0)),
            "voice_profile": voice_profile,
            "source": source,
            **source_options(
                data_cfg,
                source,
                subset,
                split,
                language=language,
                where=f"experiments.{exp_name}.data",
                missing=plan.missing_manifests,
            ),
        }


HUB_SOURCES = ("covost2", "fleurs", "common_voice")
HUB_KEYS = ("hf_name", "hf_config", "data_dir")
READER_OPTIONS = ("translations",)  # data keys of one reader (speechmerge.data.readers: options)


def check_source_keys(data_cfg: dict, source: str, where: str) -> None:
    """Every ``data`` key is used by the chosen source, or the plan stops naming it (a key that
    would be ignored, e.g. ``renderings`` of recorded speech or ``hf_name`` of a manifest)."""
    unused = []
    if source != "manifest" and data_cfg.get("manifests"):
        unused.append("manifests")
    from speechmerge.data.readers import get_reader, reader_names

    if source not in HUB_SOURCES:
        unused += [k for k in HUB_KEYS if data_cfg.get(k)]
    if data_cfg.get("root") and source not in reader_names():
        unused.append("root")
    own = get_reader(source).options if source in reader_names() else ()
    unused += [k for k in READER_OPTIONS if data_cfg.get(k) and (k not in own or not data_cfg.get("root"))]
    if source in reader_names() and source not in HUB_SOURCES and not data_cfg.get("root"):
        raise PlanError(f"config key '{where}.root': data source {source!r} reads a folder on disk; set root")
    if data_cfg.get("on_bad_audio") and source != "manifest" and not data_cfg.get("root"):
        unused.append("on_bad_audio")
    if data_cfg.get("speakers", "any") != "any":
        if not data_cfg.get("root"):
            unused.append("speakers")
        elif source in reader_names() and get_reader(source).speakers is None:
            raise PlanError(
                f"config key '{where}.speakers': {source} has no speaker ids, so its splits cannot be made "
                "speaker-disjoint; remove the key"
            )
    if source != "synth":
        unused += [
            f"{split}.renderings" for split in SPLITS if int((data_cfg.get(split) or {}).get("renderings", 1)) != 1
        ]
    hours = [f"{split}.hours" for split in SPLITS if (data_cfg.get(split) or {}).get("hours") is not None]
    if hours and not data_cfg.get("root"):
        raise PlanError(
            f"config key '{where}.{hours[0]}': hours select recorded speech read from disk; set root "
            f"(a corpus in its released layout) or use sentences"
        )
    both = [
        s for s in SPLITS if {"hours", "sentences"} <= {k for k, v in (data_cfg.get(s) or {}).items() if v is not None}
    ]
    if both:
        raise PlanError(f"config key '{where}.{both[0]}': sentences and hours both given; choose one")
    if unused:
        raise PlanError(
            f"config key '{where}': {', '.join(unused)} {'is' if len(unused) == 1 else 'are'} not used by "
            f"data source {source!r}; remove {'it' if len(unused) == 1 else 'them'} "
            "(renderings: synthesised speech only; manifests: source manifest; hf_name, hf_config, data_dir: hub sources; "
            "root: a corpus with a local reader; translations: covost2 with root; on_bad_audio: recorded speech from disk; speakers: a corpus read from root)"
        )


def source_options(
    data_cfg: dict, source: str, subset: str, split: str, *, language: str, where: str, missing: list | None = None
) -> dict:
    """Extra keys of a real-data source: a manifest TSV per subset/split, a corpus on disk
    (``root``) or a hub dataset. A manifest that is not named or not there is added to
    ``missing`` (``check_manifests`` then names them all), or without it stops the plan."""
    check_source_keys(data_cfg, source, where)
    if source == "manifest":
        tsv = ((data_cfg.get("manifests") or {}).get(subset) or {}).get(split)
        why = "not set" if not tsv else None if os.path.isfile(os.path.expandvars(str(tsv))) else f"{tsv}: no such file"
        if why:
            if missing is None:
                raise PlanError(f"config key '{where}.manifests.{subset}.{split}': {why}")
            missing.append((where, subset, split, why))
        return {"manifest": os.path.expandvars(str(tsv)) if tsv else None}
    if data_cfg.get("root"):
        return local_root(data_cfg, source, language, split, where=where)
    if source in HUB_SOURCES:
        return {k: data_cfg[k] for k in HUB_KEYS if data_cfg.get(k)}
    return {}


def _folder(data_cfg: dict, key: str, *, where: str) -> str:
    """A folder-valued data key with its ``$VARIABLES`` expanded; an unset one stops the plan."""
    value = os.path.expandvars(str(data_cfg[key]))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", value)
    if unset:
        raise PlanError(
            f"config key '{where}.{key}': environment variable {unset[0]} is not set "
            f"(a folder on disk: {data_cfg[key]!r}; docs/data.md)"
        )
    return value


def local_root(data_cfg: dict, source: str, language: str, split: str, *, where: str) -> dict:
    """``data.root`` (and the reader's options, e.g. ``translations``) of a corpus read from its
    released layout: a reader for the source, no hub keys beside it, and the layout there
    (checked now, so ``snakemake -n`` names what is missing). Returns the spec's keys."""
    from speechmerge.data.readers import get_reader, reader_names

    if source not in reader_names():
        raise PlanError(f"config key '{where}.root': source {source!r} has no local reader; readers: {reader_names()}")
    hub = [k for k in HUB_KEYS if data_cfg.get(k)]
    if hub:
        raise PlanError(f"config key '{where}': {', '.join(hub)} and root both given; root reads the corpus from disk")
    reader = get_reader(source)
    root = _folder(data_cfg, "root", where=where)
    options = {k: _folder(data_cfg, k, where=where) for k in reader.options if data_cfg.get(k)}
    try:
        reader.check_layout(Path(root), language, split, **options)
    except (FileNotFoundError, ValueError) as err:
        key = next((k for k in options if options[k] in str(err)), "root")
        raise PlanError(f"config key '{where}.{key}': {err}") from None
    return {"root": root, **options}


def add_testsets(plan: Plan, exp_name: str, subset: str, language: str, tasks) -> list[str]:
    names = []
    for task in tasks:
        if task == "translate" and language == "en":
            continue
        name = N.testset(subset, task)
        plan.testsets[(exp_name, name)] = {"subset": subset, "task": task, "language": language}
        names.append(name)
    return names


def check_manifests(plan: Plan) -> None:
    """Every manifest the experiments need, named and on disk, or one error listing each missing
    key (a paper preset whose corpora are the user's own names everything to supply at once)."""
    if not plan.missing_manifests:
        return
    lines = [f"  {where}.manifests.{subset}.{split}: {why}" for where, subset, split, why in plan.missing_manifests]
    first = plan.missing_manifests[0]
    raise PlanError(
        f"{len(lines)} manifest(s) to supply (a TSV per subset and split: audio path, transcript[, language, "
        "translation, domain, speaker]; paths relative to the TSV; docs/data.md):\n"
        + "\n".join(lines[:60])
        + (f"\n  ... and {len(lines) - 60} more" if len(lines) > 60 else "")
        + f"\ne.g. in a config file: {first[0]}.manifests: {{{first[1]}: {{{first[2]}: /data/{first[1]}/{first[2]}.tsv}}}}"
    )
