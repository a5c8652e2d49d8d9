"""A rehearsal of the paper path: each paper preset, pointed at corpora built here in their
released layouts (a CoVoST 2 tree with real MP3 clips beside Common Voice 4 TSVs; manifests of
MP3 recordings for the corpora that are the user's own), runs end to end through Snakemake on
the CPU. Only sizes are overridden (``SIZES``: a tiny random Whisper at 5 s, two training steps,
a few utterances, a few decoded tokens, AdaLoRA's schedule fitted to two steps): the rules,
readers, experiments, merges, selection grids, sweeps and reports are the presets' own."""

import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from corpus_fixtures import make_covost, make_manifests

from speechmerge.config import ROOT
from speechmerge.data.io import split_provenance

# the sizes of a paper run, shrunk; nothing else of a preset is changed
SIZES = {
    "base_model": {"name": "random-tiny", "spec": "random:tiny"},
    "audio": {"max_seconds": 5},
    "threads": {"synthesize": 1, "train": 1, "merge": 1, "evaluate": 1},
    "training": {"steps": 2, "batch_size": 2, "grad_accum": 1, "warmup_steps": 1, "eval_every": 2,
                 "checkpoint_every": 2},
    "evaluation": {"batch_size": 8, "max_new_tokens": 4, "bootstrap": 20},
}  # fmt: skip
SPLITS = ("train", "dev", "test")
LORS_LOCALES = ("ca", "de", "es", "fr", "it", "id", "nl", "pt", "ru", "sv-SE")
EP_DOMAINS = ("broadcast", "parliament", "podcast", "telephone", "lectures", "interviews", "audiobooks", "meetings",
              "read", "spontaneous")  # fmt: skip


def _run(tmp_path, preset: str, sizes: dict, env: dict | None = None, targets=()) -> subprocess.CompletedProcess:
    cfg = tmp_path / "sizes.yaml"
    cfg.write_text(yaml.safe_dump(sizes))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path / "run"),
           "--configfile", str(ROOT / "presets" / preset), str(cfg), "--cores", "2", *targets]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _report(tmp_path, experiment: str) -> str:
    return (tmp_path / "run" / "results" / "report" / experiment / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.paper
def test_paper_lors_from_covost2_on_disk(tmp_path):
    root, translations = tmp_path / "cv4", tmp_path / "covost2"
    for locale in LORS_LOCALES:
        make_covost(root, locale=locale, translations=translations)
    group = {"data": {"train": {"hours": 0.0004}, "dev": {"sentences": 1}},
             "joint": {"train": {"steps": 2}}, "sequential": {"train": {"steps": 1}}}  # fmt: skip
    sizes = {**SIZES, "experiments": {"lors_group1": group, "lors_group2": group}}
    # the first group end to end; the second (the same rules and code) up to its data splits
    group2 = [f"results/data/lors_group2/{lang}/{split}.parquet" for lang in ("id", "nl", "pt", "ru", "sv")
              for split in SPLITS]  # fmt: skip
    env = {"CV4_ROOT": str(root), "COVOST2_ROOT": str(translations)}
    _run(tmp_path, "paper-lors.yaml", sizes, env=env, targets=["results/report/lors_group1", *group2])
    data = tmp_path / "run" / "results" / "data"
    # CoVoST's own splits (train = train + train_covost), joined with Common Voice 4's clips and speakers
    test = pd.read_parquet(data / "lors_group1" / "de" / "test.parquet")
    assert list(test["id"]) == ["common_voice_de_1003", "common_voice_de_1004"]
    assert list(test["translation"]) == ["English 3, escaped", "English 4, escaped"]
    assert list(test["voice"]) == ["speaker1", "speaker0"]
    prov = split_provenance(data / "lors_group1" / "de" / "train.parquet")
    assert prov["spec"]["root"] == str(root) and prov["spec"]["translations"] == str(translations)
    assert prov["spec"]["hours"] == 0.0004
    sv = pd.read_parquet(data / "lors_group2" / "sv" / "dev.parquet")  # sv-SE, Common Voice's locale
    assert list(sv["id"]) == ["common_voice_sv-SE_1002"] and list(sv["language"]) == ["sv"]
    readme = _report(tmp_path, "lors_group1")
    assert "LoRS" in readme and "NP All" in readme
    for lang in ("ca", "de", "es", "fr", "it"):
        assert f"{lang}-transcribe" in readme and f"{lang}-translate" in readme


@pytest.mark.slow
@pytest.mark.paper
def test_paper_boostedtsvm_from_manifests(tmp_path):
    subsets = {d: ("pt", SPLITS) for d in EP_DOMAINS}
    subsets.update({d: ("pt", ("test",)) for d in ("ood_a", "ood_b")})
    subsets.update({f"lang_{lang}": (lang, ("test",)) for lang in ("en", "es", "fr", "de")})
    manifests = make_manifests(tmp_path / "recordings", subsets)
    sizes = {
        **SIZES,
        "experiments": {"ep_domains": {"data": {"manifests": manifests}, "joint": {"train": {"steps": 2}}}},
    }
    _run(tmp_path, "paper-boostedtsvm.yaml", sizes)
    readme = _report(tmp_path, "ep_domains")
    assert "BoostedTSV-M" in readme and "TSV-M" in readme


@pytest.mark.slow
@pytest.mark.paper
def test_paper_s2lora_from_manifests(tmp_path):
    manifests = make_manifests(tmp_path / "recordings", {"child": ("zh", SPLITS), "adult": ("zh", ("test",))})
    adalora = {"peft": {"tinit": 0, "tfinal": 1, "deltaT": 1}}  # AdaLoRA's schedule, fitted to two steps
    sizes = {
        **SIZES,
        "experiments": {"child_speech": {"data": {"manifests": manifests}, "methods": {"adalora": adalora}}},
    }
    _run(tmp_path, "paper-s2lora.yaml", sizes)
    readme = _report(tmp_path, "child_speech")
    assert "S2-LoRA" in readme and "AdaLoRA" in readme and "BitFit" in readme
