"""Every name and path pattern the pipeline builds and parses (speechmerge.names)."""

import pytest

from speechmerge import names as N


def test_testsets_round_trip():
    assert N.testset("lang_en", "transcribe") == "lang_en-transcribe"
    assert N.split_testset("lang_en-transcribe") == ("lang_en", "transcribe")
    assert N.testset_task("de-translate") == "translate"


def test_retention_subsets():
    assert N.retention_subset("es") == "lang_es"
    assert N.retention_language("lang_es") == "es" and N.retention_language("telephone") is None


def test_jobs_and_models():
    assert N.expert_job("de-translate") == "expert-de-translate" and N.sequential_job(3) == "seq-3"
    assert N.merge_model("ties@keep_fraction=0.3") == "merge-ties@keep_fraction=0.3"
    assert N.merge_variant("merge-lors") == "lors" and N.merge_variant("joint") is None


def test_variants_round_trip():
    assert N.variant("lors") == "lors"
    assert N.variant("lors", "scaling", 0.40) == "lors@scaling=0.4"
    assert N.variant("x", "flag", True) == "x@flag=true" and N.variant("x", "n", 1.0) == "x@n=1"
    assert N.parse_variant("lors@scaling=0.4") == ("lors", "scaling", "0.4")
    assert N.parse_variant("ties") == ("ties", None, None)
    with pytest.raises(ValueError, match="'lors@scaling'"):
        N.parse_variant("lors@scaling")


def test_path_patterns_format_to_the_documented_paths():
    assert N.DATASET.format(experiment="e", subset="de", split="dev") == "results/data/e/de/dev.parquet"
    assert N.MERGE_INFO.format(experiment="e", variant="ties") == "results/merged/e/ties.json"
    assert N.SCORES.format(experiment="e", model="merge-ties") == "results/eval/e/merge-ties.json"
    assert N.MODEL_CONFIG.format(experiment="e", job="joint") == "results/models/e/joint/config.json"


def test_model_dir_of(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    assert N.model_dir_of(d) == d
    assert N.model_dir_of(d / "config.json") == d  # need not exist yet (an output)
    assert N.model_dir_of(d / "model.safetensors") == d
    (d / "weights.bin").write_bytes(b"")
    assert N.model_dir_of(d / "weights.bin") == d  # any existing file
