"""The honest-baseline plan (native zero-shot, context-adapted base θ₀), the task-vector cosines,
the precision default and the CPU code-path switches."""

import copy
import json
import math

import pytest
import torch
from safetensors.torch import save_file

from speechmerge import names as N
from speechmerge.config import ROOT, load_config
from speechmerge.numerics import ISA_ENV, apply_environment, describe, machine, resolve_precision
from speechmerge.plan import PlanError, build_plan
from speechmerge.training.cosines import part_of, taskvector_cosines
from speechmerge.training.spec import TrainSpec


@pytest.fixture(scope="module")
def default():
    return load_config(ROOT / "config.yaml")


# ----- the plan ----------------------------------------------------------------------------
def test_default_starts_every_job_from_theta0(default):
    plan = build_plan(default)
    theta0 = N.MODEL_CONFIG.format(experiment=N.ADAPTATION, job=N.ADAPTATION_JOB)
    assert (N.ADAPTATION, N.ADAPTATION_JOB) in plan.jobs
    # θ₀ itself starts from the imported base; every other job without a previous stage from θ₀
    assert plan.finetune_start(N.ADAPTATION, N.ADAPTATION_JOB) == "resources/models/whisper-base/config.json"
    for exp, job in plan.jobs:
        if exp == N.ADAPTATION:
            continue
        init = plan.jobs[(exp, job)]["init"]
        expected = theta0 if init is None else N.MODEL_CONFIG.format(experiment=exp, job=init)
        assert plan.finetune_start(exp, job) == expected, (exp, job)
    # task vectors and merges are taken from / added to θ₀
    assert plan.theta0_weights("multilingual") == N.MODEL_WEIGHTS.format(experiment=N.ADAPTATION, job=N.ADAPTATION_JOB)
    assert plan.weights_path("multilingual", N.ADAPTED) == plan.theta0_weights("multilingual")
    # θ₀ trains on train/dev of its four languages, both tasks, never on a test split
    spec = plan.jobs[(N.ADAPTATION, N.ADAPTATION_JOB)]
    assert spec["train"] == [(N.ADAPTATION, lang, "train") for lang in ("ca", "id", "ru", "sv")]
    assert spec["tasks"] == ["transcribe", "translate"] and spec["steps"] == 32
    assert not [k for k in plan.datasets if k[0] == N.ADAPTATION and k[2] == "test"]
    assert N.ADAPTATION in plan.namespaces and N.ADAPTATION not in plan.experiments


def test_rows_and_contexts(default):
    plan = build_plan(default)
    for exp in plan.experiments:
        rows = plan.reports[exp].rows
        assert [r["model"] for r in rows[:3]] == [N.ZEROSHOT_NATIVE, N.ZEROSHOT, N.ADAPTED]
        assert [r["context_s"] for r in rows[:3]] == [30, 5, 5]
        assert rows[1]["label"] == "Zero-shot (5 s crop)"
        tests = set(plan.model_testsets(exp, N.ZEROSHOT))
        assert set(plan.model_testsets(exp, N.ZEROSHOT_NATIVE)) == tests == set(plan.model_testsets(exp, N.ADAPTED))
    # the native row loads the uncropped base
    assert plan.eval_model_config("peft", N.ZEROSHOT_NATIVE) == "resources/models/whisper-base-native/config.json"
    assert plan.weights_path("peft", N.ZEROSHOT_NATIVE) == "resources/models/whisper-base-native/model.safetensors"
    assert plan.eval_model_config("peft", N.ZEROSHOT) == "resources/models/whisper-base/config.json"


def test_no_crop_no_native_row_and_theta0_off(default):
    cfg = copy.deepcopy(default)
    cfg["audio"]["max_seconds"] = None
    cfg["adapted_base"]["enabled"] = False
    plan = build_plan(cfg)
    rows = plan.reports["multilingual"].rows
    assert [r["model"] for r in rows if r["model"] in N.START_MODELS] == [N.ZEROSHOT]
    assert rows[0]["label"] == "Zero-shot"
    assert plan.theta0_weights("multilingual") == "resources/models/whisper-base/model.safetensors"
    assert plan.finetune_start("multilingual", "expert-de") == "resources/models/whisper-base/config.json"
    assert N.ADAPTATION not in plan.namespaces
    cfg["audio"]["max_seconds"] = 30  # a 30 s "crop" is the native context: one zero-shot row
    assert [r["model"] for r in build_plan(cfg).reports["peft"].rows][:2] == [N.ZEROSHOT, "full"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda c: c["adapted_base"].__setitem__("languages", ["ca", "de"]),
            r"adapted_base.languages: de \(in experiments.multilingual\)",
        ),
        (lambda c: c["adapted_base"].__setitem__("languages", ["en"]), r"en \(in experiments.domains\)"),
        (
            lambda c: c["experiments"].__setitem__(N.ADAPTATION, {}),
            f"experiments.{N.ADAPTATION}: this name is reserved",
        ),
    ],
)
def test_theta0_plan_errors_name_the_key(default, mutate, expected):
    cfg = copy.deepcopy(default)
    mutate(cfg)
    with pytest.raises(PlanError, match=expected):
        build_plan(cfg)


# ----- task-vector cosines -------------------------------------------------------------------
def _weights(path, enc, dec):
    save_file(
        {
            "model.encoder.w": torch.tensor(enc, dtype=torch.float32),
            "model.decoder.w": torch.tensor(dec, dtype=torch.float32),
            "step": torch.tensor([1]),
        },
        str(path),
    )
    return path


def test_cosines_from_base_and_from_theta0(tmp_path):
    # θ₀ = base + s with s = (1, 0 | 1, 0); the experts add s plus orthogonal specific parts
    base = _weights(tmp_path / "base.safetensors", [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    theta0 = _weights(tmp_path / "t0.safetensors", [1.0, 0.0, 0.0], [1.0, 0.0, 0.0])
    a = _weights(tmp_path / "a.safetensors", [1.0, 1.0, 0.0], [1.0, 0.0, 0.0])
    b = _weights(tmp_path / "b.safetensors", [1.0, 0.0, 1.0], [1.0, 0.0, 2.0])
    out = taskvector_cosines(base, theta0, {"a": a, "b": b})
    # from the base: τa = (1,1,0 | 1,0,0), τb = (1,0,1 | 1,0,2): dot 2, |τa|² 3, |τb|² 7
    assert out["from_base"]["all"]["pairs"]["a|b"] == pytest.approx(2 / math.sqrt(3 * 7))
    assert out["from_base"]["encoder"]["pairs"]["a|b"] == pytest.approx(1 / 2)
    assert out["from_base"]["decoder"]["pairs"]["a|b"] == pytest.approx(1 / math.sqrt(5))
    # from θ₀: τa = (0,1,0 | 0,0,0), τb = (0,0,1 | 0,0,2): orthogonal
    assert out["from_theta0"]["all"]["pairs"]["a|b"] == pytest.approx(0.0)
    assert math.isnan(out["from_theta0"]["decoder"]["pairs"]["a|b"])  # τa's decoder part is 0
    # cos(τa from base, θ₀ − base) = 2 / (√3 √2)
    assert out["with_theta0_shift"]["a"] == pytest.approx(2 / math.sqrt(6))
    assert out["theta0_is_base"] is False
    assert part_of("model.encoder.layers.0.fc1.weight") == "encoder" and part_of("proj_out.weight") == "other"


def test_cosines_name_the_bad_tensor(tmp_path):
    base = _weights(tmp_path / "base.safetensors", [0.0, 0.0], [0.0, 0.0])
    bad = _weights(tmp_path / "bad.safetensors", [float("nan"), 0.0], [0.0, 0.0])
    with pytest.raises(ValueError, match=r"bad.safetensors: non-finite .* 'model.encoder.w'"):
        taskvector_cosines(base, base, {"a": base, "b": bad})
    with pytest.raises(ValueError, match="at least two experts"):
        taskvector_cosines(base, base, {"a": base})


# ----- precision and the CPU code path ------------------------------------------------------
def test_precision_defaults_to_float32_everywhere(default):
    assert TrainSpec(experiment="e", job="j").precision == "float32"
    assert default["precision"] == "float32" and "precision" not in default["training"]
    plan = build_plan(default)
    assert {spec["precision"] for spec in plan.jobs.values()} == {"float32"}
    assert plan.evaluation_settings["dtype"] == "float32"


def test_top_level_precision_reaches_every_stage_and_stages_override_it(default):
    cfg = copy.deepcopy(default)
    cfg["precision"] = "auto"
    plan = build_plan(cfg)
    assert {spec["precision"] for spec in plan.jobs.values()} == {"auto"}
    assert plan.evaluation_settings["dtype"] == "auto"
    # dev selection decodes as the test sets do
    specs = [plan.merge_spec(e, v) for (e, v) in plan.variants]
    assert all(s["selection"]["decoding"]["dtype"] == "auto" for s in specs if s.get("selection"))
    cfg["training"]["precision"] = "float32"
    cfg["evaluation"]["dtype"] = "bfloat16"
    plan = build_plan(cfg)
    assert {spec["precision"] for spec in plan.jobs.values()} == {"float32"}
    assert plan.evaluation_settings["dtype"] == "bfloat16"
    TrainSpec(experiment="e", job="j", precision="auto").validate()
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainSpec(experiment="e", job="j", precision="half").validate()
    # float16 is a CUDA precision: refused where the stage runs on the CPU
    TrainSpec(experiment="e", job="j", precision="float16", device="cuda").validate()
    with pytest.raises(ValueError, match="float16 runs on CUDA only"):
        resolve_precision("float16", where="training.precision", device="cpu")
    with pytest.raises(PlanError, match="'training.precision': float16 runs on CUDA only"):
        cfg16 = copy.deepcopy(default)
        cfg16["training"]["precision"] = "float16"
        build_plan(cfg16)


def test_auto_precision_follows_the_cpu_flags(monkeypatch):
    from speechmerge import numerics

    monkeypatch.setattr(numerics, "_cpu_flags", lambda: ["avx2", "fma", "avx512f", "avx512_bf16"])
    assert numerics.resolve_precision("auto") == "bfloat16"
    monkeypatch.setattr(numerics, "_cpu_flags", lambda: ["avx2", "fma", "amx_bf16", "amx_tile"])
    assert numerics.resolve_precision("auto") == "bfloat16"
    monkeypatch.setattr(numerics, "_cpu_flags", lambda: ["avx2", "fma", "avx512f"])
    assert numerics.resolve_precision("auto") == "float32"
    assert numerics.resolve_precision(None) == numerics.resolve_precision("float32") == "float32"
    assert numerics.resolve_precision("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="'evaluation.dtype': 'half'"):
        numerics.resolve_precision("half", where="evaluation.dtype")


def test_cpu_isa_switches(default):
    env = {"MKL_CBWR": "AUTO", "OTHER": "x"}
    assert default["numerics"]["cpu_isa"] == "native"
    assert apply_environment(default, env) == {} and env == {"OTHER": "x"}
    assert apply_environment({}, env) == {}  # native is the default
    assert apply_environment({"numerics": {"cpu_isa": "avx2"}}, env) == ISA_ENV["avx2"]
    assert env == {"MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "OTHER": "x"}
    assert apply_environment({"numerics": {"cpu_isa": "native"}}, env) == {}
    assert env == {"OTHER": "x"}
    with pytest.raises(ValueError, match="numerics.cpu_isa"):
        apply_environment({"numerics": {"cpu_isa": "avx9"}}, env)


def test_machine_record_is_json_and_described():
    rec = machine()
    json.dumps(rec)
    assert rec["torch_threads"] >= 1 and "cpu" in rec
    line = describe(
        {
            "cpu": "X",
            "cpu_flags": ["avx2", "avx512f"],
            "numerics_env": {"MKL_CBWR": "AVX2"},
            "torch_cpu_capability": "AVX2",
        }
    )
    assert line == "X (avx512f); AVX2 code path pinned (kernels AVX2)"


# ----- the README's tables --------------------------------------------------------------------
def test_readme_tables_replace_only_the_marked_block(tmp_path):
    from speechmerge.report.results_doc import BEGIN, END, results_tables, update_marked

    (tmp_path / "r" / "a").mkdir(parents=True)
    (tmp_path / "r" / "a" / "table.md").write_text("| x |\n|---|\n| 1 |\n")
    (tmp_path / "r" / "a" / "claims.md").write_text("claims of a\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold\n{END}\nrest\n")
    assert update_marked(readme, results_tables(tmp_path / "r", ["a"]))
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{END}\nrest\n") and "old" not in text
    assert text.index("| 1 |") < text.index("claims of a")
    assert not update_marked(readme, results_tables(tmp_path / "r", ["a"]))  # idempotent
    with pytest.raises(FileNotFoundError, match="no report for experiment 'b'"):
        results_tables(tmp_path / "r", ["b"])
    (tmp_path / "bad.md").write_text(f"{END}\n{BEGIN}\n")
    with pytest.raises(ValueError, match="bad.md: needs the lines"):
        update_marked(tmp_path / "bad.md", "x")


def test_footnote_names_training_and_decoding_precision(tmp_path):
    from speechmerge.report.provenance import footnote, run_provenance

    score = tmp_path / "scores.json"
    score.write_text(json.dumps({"results": [{"testset": "de", "decoding": {"dtype": "bfloat16"}}]}))
    prov = run_provenance({"seed": 0}, [score], {"j": ("train_info.json", {"precision": "bfloat16", "seed": 0})})
    assert prov["precision"] == ["bfloat16"] and prov["decoding_dtype"] == ["bfloat16"]
    assert "precision: training bfloat16 (autocast, float32 weights), decoding bfloat16 weights" in footnote(prov)
    # a merge study trains nothing: the footnote still says how it decoded
    prov = run_provenance({"seed": 0}, [score], {})
    assert "precision: no training, decoding bfloat16 weights" in footnote(prov)


def test_a_gpu_is_named_in_the_footnote_with_its_versions():
    rec = {"cpu": "AMD EPYC", "cpu_flags": [], "torch_cpu_capability": "AVX2", "numerics_env": {},
           "gpu": {"name": "NVIDIA H100 80GB HBM3", "memory_gb": 79.1, "driver": "550.54", "cuda": "12.4",
                   "cudnn": 90100}}  # fmt: skip
    assert describe(rec) == ("NVIDIA H100 80GB HBM3 (79.1 GB; driver 550.54, CUDA 12.4, cuDNN 90100) with AMD EPYC")
    assert "GB" not in describe({**rec, "gpu": None})
