"""Rule resources from the model size and the config (speechmerge.jobresources), by hand."""

import math

import pytest

from speechmerge import jobresources as R


def test_model_sizes():
    base = R.model_size("bundle:whisper-base")
    assert (base.encoder_layers, base.decoder_layers, base.d_model) == (6, 6, 512)
    # 51865*512 + 448*512 + 12*12*512^2 + 4*6*512^2
    assert base.params == 26_554_880 + 229_376 + 37_748_736 + 6_291_456
    assert R.model_size("hf:openai/whisper-large-v3").d_model == 1280
    assert R.model_size("hf:openai/whisper-small").d_model == 768
    assert R.model_size("hf:someone/finetuned-asr").d_model == 1280  # unknown: the safe side
    assert R.model_size("random:tiny").params == 51865 * 64 + 448 * 64 + 12 * 4 * 64**2 + 4 * 2 * 64**2
    with pytest.raises(ValueError, match="unknown random size 'huge'"):
        R.model_size("random:huge")


def test_model_size_from_a_local_config(tmp_path):
    (tmp_path / "config.json").write_text('{"encoder_layers": 3, "decoder_layers": 1, "d_model": 96}')
    assert R.model_size(f"hf:{tmp_path}") == R.ModelSize(3, 1, 96)


def test_random_dims_match_the_builder():
    from speechmerge.models.random_init import RANDOM_SIZES

    for name, (enc, dec, d) in R.RANDOM_DIMS.items():
        arch = RANDOM_SIZES[name]
        assert (arch["encoder_layers"], arch["decoder_layers"], arch["d_model"]) == (enc, dec, d)


def _config(**extra):
    return {
        "base_model": {"spec": "bundle:whisper-base"},
        "audio": {"max_seconds": 5},
        "evaluation": {"batch_size": 64},
        **extra,
    }


def test_finetune_estimate_by_hand():
    job = {"steps": 16, "batch_size": 8, "grad_accum": 1, "eval_every": 16}
    est = R.estimate(
        "finetune",
        _config(),
        job=job,
        datasets=[{"sentences": 160, "renderings": 2}],
        dev=[{"sentences": 12, "renderings": 1}],
    )
    params = R.model_size("bundle:whisper-base").params
    w = params * 4 / 1e6
    act = 0.004 * 8 * 5 * 12 * 512
    # the split streams: at most two row groups of 128 utterances of its 320 are held
    audio = min(320, 2 * 128) * 5 * 16000 * 4 / 1e6
    mem = 1000 + 5 * w + act + audio
    assert est["mem_mb"] == math.ceil(mem / 100) * 100
    per_sample = 0.7 * params / R.WHISPER_SIZE_BASE.params
    secs = 16 * 8 * per_sample + 2 * 12 * per_sample / 3
    assert est["runtime"] == 5 + math.ceil(3 * secs / 60)
    assert est["gpu"] == 0
    # bfloat16 autocast keeps a bf16 copy of the weights through the step (measured: +0.4 GB in
    # the default run's fine-tuning jobs)
    for precision in ("bfloat16", "auto"):
        est = R.estimate(
            "finetune",
            _config(),
            job={**job, "precision": precision},
            datasets=[{"sentences": 160, "renderings": 2}],
            dev=[{"sentences": 12, "renderings": 1}],
        )
        assert est["mem_mb"] == math.ceil((mem + w / 2) / 100) * 100


def test_more_steps_and_bigger_models_ask_for_more():
    small = R.estimate("finetune", _config(), job={"steps": 10, "batch_size": 8})
    longer = R.estimate("finetune", _config(), job={"steps": 1000, "batch_size": 8})
    large = R.estimate(
        "finetune", _config(base_model={"spec": "hf:openai/whisper-large-v3"}), job={"steps": 10, "batch_size": 8}
    )
    assert longer["runtime"] > small["runtime"] and longer["mem_mb"] == small["mem_mb"]
    assert large["mem_mb"] > 5 * small["mem_mb"] and large["runtime"] > small["runtime"]
    capped = R.estimate(
        "finetune",
        _config(base_model={"spec": "hf:openai/whisper-large-v3"}, audio={}),
        job={"steps": 10**6, "batch_size": 64},
    )
    assert capped["runtime"] == R.MAX_RUNTIME_MIN


def test_gpu_only_for_model_rules_on_cuda():
    for rule in ("finetune", "evaluate", "merge"):
        assert R.estimate(rule, _config(device="cuda"))["gpu"] == 1
        assert R.estimate(rule, _config(device="cuda:1"))["gpu"] == 1
        assert R.estimate(rule, _config())["gpu"] == 0
    for rule in ("synthesize_corpus", "task_vector", "import_model", "report"):
        assert R.estimate(rule, _config(device="cuda"))["gpu"] == 0
    slow = R.estimate("evaluate", _config(), datasets=[{"sentences": 5000}])
    fast = R.estimate("evaluate", _config(device="cuda"), datasets=[{"sentences": 5000}])
    assert fast["runtime"] < slow["runtime"]
    with pytest.raises(ValueError, match="no resource estimate for rule 'bogus'"):
        R.estimate("bogus", _config())


def test_gpu_per_stage_and_its_memory_by_hand():
    from speechmerge.data.io import ROW_GROUP

    assert R.ROW_GROUP == ROW_GROUP
    cfg = _config(training={"device": "cuda"}, gpu={"model": "h100"})
    assert R.estimate("finetune", cfg)["gpu"] == 1 and R.estimate("evaluate", cfg)["gpu"] == 0
    assert R.estimate("finetune", cfg)["gpu_model"] == "h100" and R.estimate("evaluate", cfg)["gpu_model"] == ""
    # a merge that selects on dev decodes on the evaluation device
    ev = _config(evaluation={"batch_size": 64, "device": "cuda"})
    assert R.estimate("merge", ev)["gpu"] == 0 and R.estimate("merge", ev, n_points=4, n_merges=1)["gpu"] == 1
    # full fine-tuning, whisper-large-v3 at 30 s, batch 32, bfloat16: weights + grads + 2 moments
    size = R.model_size("hf:openai/whisper-large-v3")
    w = size.params * 4 / 1e6
    act = 0.004 * 32 * 30 * 64 * 1280 / 2
    job = {"batch_size": 32, "precision": "bfloat16", "method": "full"}
    est = R.estimate(
        "finetune", _config(base_model={"spec": "hf:openai/whisper-large-v3"}, audio={}, device="cuda"), job=job
    )
    assert est["gpu_mem_mb"] == math.ceil((1500 + 4 * w + act) / 100) * 100
    assert est["gpu_mem_mb"] > 80_000  # does not fit an 80 GB GPU without checkpointing
    ck = R.estimate(
        "finetune",
        _config(base_model={"spec": "hf:openai/whisper-large-v3"}, audio={}, device="cuda"),
        job={**job, "gradient_checkpointing": True},
    )
    assert ck["gpu_mem_mb"] == math.ceil((1500 + 4 * w + act * (2 / 64 + 0.1)) / 100) * 100 < 80_000
    assert R.estimate("finetune", _config(device="cuda", gpu={"memory_gb": 20}))["gpu_mem_mb"] == 20_000
    assert R.estimate("finetune", _config())["gpu_mem_mb"] == 0


def test_unset_profile_variables():
    exprs = [
        'slurm_account="$SPEECHMERGE_SLURM_ACCOUNT"',
        'slurm_partition="${SPEECHMERGE_SLURM_PARTITION}"',
        "tmpdir=system_tmpdir",
        'x="$HOME"',
    ]
    assert R.unset_variables(exprs, {}) == ["SPEECHMERGE_SLURM_ACCOUNT", "SPEECHMERGE_SLURM_PARTITION"]
    assert R.unset_variables(exprs, {"SPEECHMERGE_SLURM_ACCOUNT": "", "SPEECHMERGE_SLURM_PARTITION": "p"}) == []


def test_every_rule_with_resources_has_an_estimate():
    import re
    from pathlib import Path

    rules_dir = Path(__file__).resolve().parents[1] / "rules"
    named = set()
    for smk in rules_dir.glob("*.smk"):
        named |= set(re.findall(r'job_resource\("(\w+)", "\w+"\)', smk.read_text()))
        if "import_resource(" in smk.read_text():  # the import rules, one per imported folder
            named.add("import_model")
    assert named >= {
        "finetune",
        "evaluate",
        "merge",
        "task_vector",
        "import_model",
        "synthesize_corpus",
        "report",
        "report_tables",
        "audio_checksum",
    }
    for rule in named:
        est = R.estimate(rule, _config())
        assert est["mem_mb"] >= 500 and est["runtime"] >= 5, rule


def test_cosines_and_native_zero_shot_cover_what_the_default_run_measured():
    """Peak RSS in the default run: taskvector_cosines 3.1 GB (5 experts), the zero-shot row at
    30 s 6.1 GB (domains, 108 utterances at batch 64); the estimates are upper bounds."""
    from types import SimpleNamespace

    from speechmerge import names as N
    from speechmerge.config import ROOT, load_config
    from speechmerge.jobresources import estimate, resource_args
    from speechmerge.plan import build_plan

    cfg = load_config(ROOT / "config.yaml")
    plan = build_plan(cfg)
    cos = estimate(
        "taskvector_cosines", cfg, **resource_args(plan, "taskvector_cosines", SimpleNamespace(experiment="domains"))
    )
    assert cos["mem_mb"] >= 3100
    wc = SimpleNamespace(experiment="domains", model=N.ZEROSHOT_NATIVE)
    native = estimate("evaluate", cfg, **resource_args(plan, "evaluate", wc))
    cropped = estimate(
        "evaluate", cfg, **resource_args(plan, "evaluate", SimpleNamespace(experiment="domains", model=N.ZEROSHOT))
    )
    assert native["mem_mb"] >= 6100 and native["runtime"] > cropped["runtime"]
