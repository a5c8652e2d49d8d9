"""The config schema rejects bad input by name, and the plan expands configs as documented."""

import copy

import pytest

from speechmerge.config import ROOT, ConfigError, load_config, validate_config
from speechmerge.plan import PlanError, build_plan, format_value


@pytest.fixture(scope="module")
def default():
    return load_config(ROOT / "config.yaml")


@pytest.fixture(scope="module")
def smoke():
    return load_config(ROOT / "config.yaml", ROOT / "presets" / "smoke.yaml")


def test_shipped_configs_validate(default, smoke):
    validate_config(default)
    validate_config(smoke)
    assert smoke["base_model"]["spec"] == "random:tiny"
    # presets replace lists wholesale (merges), so the smoke run does not inherit the default's
    assert "soup" not in smoke["experiments"]["multilingual"]["merges"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda c: c["experiments"]["multilingual"].__setitem__("languages", ["de", "x/y"]),
            "experiments.multilingual.languages[1]': 'x/y' does not match",
        ),
        (lambda c: c["training"].__setitem__("stepz", 3), "'stepz' was unexpected"),
        (lambda c: c["training"].__setitem__("steps", "many"), "training.steps': 'many' is not of type 'integer'"),
        (lambda c: c["base_model"].__setitem__("spec", "ftp:whisper"), "base_model.spec"),
        (lambda c: c["experiments"]["peft"]["methods"].__setitem__("prefix", {}), "prefix"),
    ],
)
def test_schema_names_the_bad_key(default, mutate, expected):
    bad = copy.deepcopy(default)
    mutate(bad)
    with pytest.raises(ConfigError, match="invalid config key") as err:
        validate_config(bad)
    assert expected in str(err.value)


def test_default_plan_shape(default):
    plan = build_plan(default)
    ml = default["experiments"]["multilingual"]
    langs = ml["languages"]
    # 3 splits per language, experts + joint + one sequential stage per language
    assert {(s, sp) for (e, s, sp) in plan.datasets if e == "multilingual"} == {
        (lang, sp) for lang in langs for sp in ("train", "dev", "test")
    }
    jobs = [j for (e, j) in plan.jobs if e == "multilingual"]
    assert jobs == [f"expert-{x}" for x in langs] + ["joint"] + [f"seq-{k}" for k in range(1, len(langs) + 1)]
    assert plan.jobs[("multilingual", "seq-3")]["init"] == "seq-2"
    assert plan.jobs[("multilingual", "seq-1")]["init"] is None
    # experts are evaluated on their own language only (both tasks); merges on every test set
    assert plan.model_testsets("multilingual", "expert-de") == ["de-transcribe", "de-translate"]
    assert len(plan.model_testsets("multilingual", "merge-lors")) == 2 * len(langs)
    # the method's row is selected on dev over the config's grid
    assert plan.variants[("multilingual", "lors")]["selection"]["grid"] == {"scaling": [0.2, 0.4, 0.6]}
    assert plan.variants[("multilingual", "lors")]["experts"] == [f"expert-{x}" for x in langs]
    # test-set sweep variants are named method@param=value and carry the value in their hparams
    swept = copy.deepcopy(default)
    swept["experiments"]["multilingual"]["sweeps"] = [{"method": "lors", "param": "scaling", "values": [0.4]}]
    plan = build_plan(swept)
    assert plan.variants[("multilingual", "lors@scaling=0.4")]["hparams"] == {"scaling": 0.4}
    assert "selection" not in plan.variants[("multilingual", "lors@scaling=0.4")]
    # intermediate sequential stages are evaluated on ASR only (forgetting curve)
    assert all(t.endswith("-transcribe") for t in plan.model_testsets("multilingual", "seq-1"))


def test_domains_and_peft_plan(default):
    plan = build_plan(default)
    dom = default["experiments"]["domains"]
    rep = plan.report_spec("domains")
    assert rep["ood_subsets"] == dom["ood_domains"]
    assert rep["retention_subsets"] == [f"lang_{x}" for x in dom["retention_languages"]]
    assert ("domains", "farfield", "train") not in plan.datasets  # OOD: test only
    assert plan.testsets[("domains", "lang_en-transcribe")]["language"] == "en"
    assert plan.variants[("domains", "boosted_tsv_m")]["selection"] == {
        "grid": {"beta": [0.1, 0.3]},
        "metric": "mean_error",
        "split": "dev",
    }
    peft = plan.report_spec("peft")
    assert peft["peft_methods"] == ["full", "bitfit", "lora", "adalora", "s2lora"]
    assert plan.jobs[("peft", "lora")]["peft"] == {"r": 8, "lora_alpha": 16}
    assert plan.jobs[("peft", "lora")]["lr"] == 1.0e-3
    inputs = plan.report_inputs("peft")
    assert inputs["rank_allocations"] == [
        "results/models/peft/adalora/rank_allocation.json",
        "results/models/peft/s2lora/rank_allocation.json",
    ]


def test_plan_errors_name_the_key(default):
    bad = copy.deepcopy(default)
    bad["experiments"]["domains"]["train_domains"] = ["clean", "underwater"]
    with pytest.raises(PlanError, match="underwater"):
        build_plan(bad)
    bad = copy.deepcopy(default)
    bad["experiments"]["multilingual"]["merges"] = ["ties", "magic"]
    with pytest.raises(PlanError, match="unknown merge method 'magic'"):
        build_plan(bad, merge_methods={"ties"})
    bad = copy.deepcopy(default)
    bad["experiments"]["multilingual"]["sequential"] = {"enabled": True, "order": ["de", "ru"]}
    with pytest.raises(PlanError, match=r"sequential.order: \['ru'\]"):
        build_plan(bad)


def test_weights_paths(default):
    plan = build_plan(default)
    assert plan.weights_path("multilingual", "zeroshot") == "resources/models/whisper-base/model.safetensors"
    assert plan.weights_path("multilingual", "merge-ties") == "results/merged/multilingual/ties.safetensors"
    assert plan.weights_path("peft", "lora") == "results/models/peft/lora/model.safetensors"
    with pytest.raises(KeyError, match="no model 'nope'"):
        plan.weights_path("peft", "nope")
    assert format_value(0.30) == "0.3" and format_value(1.0) == "1" and format_value(True) == "true"


@pytest.mark.parametrize("preset", ["paper-lors.yaml", "paper-boostedtsvm.yaml", "paper-s2lora.yaml"])
def test_paper_presets_validate(preset, tmp_path, monkeypatch):
    config = load_config(ROOT / "config.yaml", ROOT / "presets" / preset)
    validate_config(config)
    if preset == "paper-lors.yaml":
        # CoVoST 2 is read from disk: without CV4_ROOT / COVOST2_ROOT the plan names the variable
        monkeypatch.delenv("CV4_ROOT", raising=False)
        monkeypatch.delenv("COVOST2_ROOT", raising=False)
        with pytest.raises(PlanError, match=r"'experiments.lors_group1.data.root': environment variable CV4_ROOT"):
            build_plan(config)
        from corpus_fixtures import make_covost

        for lang in ("ca", "de", "es", "fr", "it", "id", "nl", "pt", "ru", "sv-SE"):
            make_covost(tmp_path / "cv4", locale=lang, translations=tmp_path / "covost2")
        monkeypatch.setenv("CV4_ROOT", str(tmp_path / "cv4"))
        with pytest.raises(PlanError, match=r"'experiments.lors_group1.data.translations': .* COVOST2_ROOT is not set"):
            build_plan(config)
        monkeypatch.setenv("COVOST2_ROOT", str(tmp_path / "nowhere"))
        with pytest.raises(PlanError, match=r"'experiments.lors_group1.data.translations': .*nowhere is not a folder"):
            build_plan(config)
        monkeypatch.setenv("COVOST2_ROOT", str(tmp_path / "covost2"))
        plan = build_plan(config)
        # the paper's two language groups, as two experiments of one kind in one run
        assert plan.experiments == ["lors_group1", "lors_group2"]
        assert {plan.reports[e].kind for e in plan.experiments} == {"multilingual"}
        assert plan.reports["lors_group1"].subsets == ["ca", "de", "es", "fr", "it"]
        assert plan.reports["lors_group2"].subsets == ["id", "nl", "pt", "ru", "sv"]
        spec = plan.datasets[("lors_group1", "de", "train")]
        assert spec["source"] == "covost2" and spec["root"] == str(tmp_path / "cv4") and spec["hours"] == 5
        assert spec["translations"] == str(tmp_path / "covost2")
        assert spec["transforms"] == []  # real data is not re-rendered in an acoustic domain
        # nothing inherited from the default config's laptop-scale experiment: the preset's steps
        assert plan.jobs[("lors_group2", "expert-sv")]["steps"] == config["training"]["steps"] == 4000
        assert ("lors_group1", "expert-sv") not in plan.jobs and ("lors_group2", "expert-de") not in plan.jobs
    else:
        # the papers' corpora are not public: the preset asks for the user's manifests by name
        name = "ep_domains" if "boosted" in preset else "child_speech"
        # every manifest to supply, named by its key, in one message
        with pytest.raises(PlanError) as err:
            build_plan(config)
        msg = str(err.value)
        want = 36 if "boosted" in preset else 4  # 10 domains x 3 splits + 2 out-of-domain + 4 retention tests
        assert f"{want} manifest(s) to supply" in msg and msg.count(": not set") == want
        assert (
            f"experiments.{name}.data.manifests.{'broadcast' if 'boosted' in preset else 'child'}.train: not set" in msg
        )
        # a named manifest that is not on disk: its key and path
        mf = config["experiments"][name]["data"]["manifests"]
        mf["broadcast" if "boosted" in preset else "child"] = {"train": str(tmp_path / "nope.tsv")}
        with pytest.raises(PlanError, match=r"manifests\.\w+\.train: .*nope\.tsv: no such file"):
            build_plan(config)
        steps = config["experiments"][name].get("train", {}).get("steps", config["training"]["steps"])
        assert steps == config["training"]["steps"]  # the default experiment's 16-20 steps are not inherited


def test_one_expert_per_language_and_task(default):
    config = copy.deepcopy(default)
    config["experiments"]["multilingual"]["experts_per_task"] = True
    validate_config(config)
    plan = build_plan(config)
    langs = config["experiments"]["multilingual"]["languages"]
    experts = [f"expert-{lang}-{task}" for lang in langs for task in ("transcribe", "translate")]
    assert plan.experts["multilingual"] == experts
    de_asr = plan.jobs[("multilingual", "expert-de-transcribe")]
    assert de_asr["tasks"] == ["transcribe"] and de_asr["train"] == [("multilingual", "de", "train")]
    assert plan.jobs[("multilingual", "expert-de-translate")]["tasks"] == ["translate"]
    # each expert is evaluated on its own test set only; merges take all ten task vectors
    assert plan.model_testsets("multilingual", "expert-de-translate") == ["de-translate"]
    ml_merges = [spec for (e, _), spec in plan.variants.items() if e == "multilingual"]
    assert ml_merges and all(spec["experts"] == experts for spec in ml_merges)
    report = plan.report_spec("multilingual")
    row = next(r for r in report["rows"] if r["model"] == "experts")
    assert row["per_testset"]["es-translate"] == "expert-es-translate"
    assert report["expert_testsets"]["expert-es-transcribe"] == ["es-transcribe"]
    assert len(plan.report_inputs("multilingual")["taskvectors"]) == 2 * len(langs)


def test_report_specs_carry_the_resolved_default_merges(default):
    plan = build_plan(default)
    # dev-selected rows are no default merges: only soup & co. (no grid) are
    assert set(plan.reports["domains"].default_merges) == {"soup", "model_stock", "karcher", "multislerp"}
    cfg = copy.deepcopy(default)
    for exp in ("multilingual", "domains"):
        cfg["experiments"][exp]["selection"]["default_rows"] = True
    cfg["experiments"]["domains"]["sweeps"] = [{"method": "boosted_tsv_m", "param": "beta", "values": [0.1]}]
    plan = build_plan(cfg)
    domains = plan.reports["domains"].default_merges
    assert domains["boosted_tsv_m"]["beta"] == 0.3 and "boosted_tsv_m@beta=0.1" not in domains
    assert plan.reports["domains"].default_models["boosted_tsv_m"] == "merge-boosted_tsv_m@defaults"
    n = len(plan.experts["multilingual"])
    assert plan.reports["multilingual"].default_merges["lors"]["scaling"] == pytest.approx(1 / n)
    assert plan.reports["peft"].default_merges == {}
    bad = copy.deepcopy(default)
    bad["experiments"]["multilingual"]["hparams"] = {"ties": {"keep_fraction": 2.0}}
    with pytest.raises(PlanError, match=r"hparams.ties': .*'keep_fraction'"):
        build_plan(bad)


def test_any_number_of_experiments_per_kind(smoke, tmp_path):
    """Two multilingual studies side by side, each with its own name, experts and report."""
    import subprocess
    import sys

    config = copy.deepcopy(smoke)
    other = copy.deepcopy(config["experiments"]["multilingual"])
    other["languages"] = ["fr", "it"]
    config["experiments"]["second-group"] = other
    validate_config(config)
    plan = build_plan(config)
    assert plan.experiments == ["multilingual", "domains", "peft", "second-group"]
    assert plan.reports["second-group"].kind == "multilingual"
    assert ("second-group", "expert-fr") in plan.jobs and ("multilingual", "expert-fr") not in plan.jobs
    assert "results/report/second-group" in plan.all_targets()
    import yaml

    extra = tmp_path / "two.yaml"
    extra.write_text(yaml.safe_dump({"experiments": {"second-group": other}}))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(ROOT / "presets" / "smoke.yaml"), str(extra), "-n", "--quiet", "rules"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "report" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "experiment, key, detail",
    [
        ({"languages": ["de"]}, "experiments.extra", "'kind' is a required property"),
        ({"kind": "zoo", "languages": ["de"]}, "experiments.extra.kind", "'zoo' is not one of"),
        ({"kind": "domains", "languages": ["de"]}, "experiments.extra", "'languages' was unexpected"),
    ],
)
def test_experiment_kind_is_checked(smoke, experiment, key, detail):
    config = copy.deepcopy(smoke)
    config["experiments"]["extra"] = experiment
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert f"'{key}'" in str(err.value) and detail in str(err.value), str(err.value)


@pytest.mark.parametrize("name", ["a/b", "..", "-x", "x" * 65])
def test_experiment_names_are_one_path_component(smoke, name):
    config = copy.deepcopy(smoke)
    config["experiments"][name] = copy.deepcopy(config["experiments"]["multilingual"])
    with pytest.raises(ConfigError, match="experiments"):
        validate_config(config)


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["experiments"]["multilingual"].__setitem__("languages", ["de", "xx"]), "experiments.multilingual"),
        (lambda c: c["adapted_base"].__setitem__("languages", ["qq"]), "adapted_base"),
    ],
)
def test_a_language_whisper_does_not_know_is_named_by_the_plan(default, mutate, key):
    bad = copy.deepcopy(default)
    mutate(bad)
    validate_config(bad)  # two or three letters pass the schema; the plan checks Whisper's list
    with pytest.raises(PlanError, match=f"config key '{key}'.*is not one of Whisper's language codes"):
        build_plan(bad)


def test_synthesised_speech_in_a_language_the_corpus_lacks_is_named(default):
    from speechmerge.config import CORPUS
    from speechmerge.plan.checks import check_plan

    bad = copy.deepcopy(default)
    bad["experiments"]["multilingual"]["languages"] = ["de", "ja"]  # Whisper has it, the corpus does not
    validate_config(bad)
    with pytest.raises(PlanError, match=r"language 'ja' of data set 'ja' is not in the corpus"):
        check_plan(build_plan(bad), corpus=CORPUS)
