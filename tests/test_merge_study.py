"""Merge your own experts (experiment kind ``merge-study``): experts the test builds itself from a
tiny random Whisper — a model folder, a single safetensors file and a LoRA adapter folder — are
imported onto the study's base, merged and evaluated by the whole DAG on the CPU."""

from __future__ import annotations

import copy
import csv
import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from speechmerge.config import ROOT, deep_update, load_config, validate_config
from speechmerge.models import import_model
from speechmerge.models.experts import ExpertError, expert_format, import_expert
from speechmerge.plan import PlanError, build_plan

SMOKE = load_config(ROOT / "config.yaml", ROOT / "presets" / "smoke.yaml")
WEIGHTS = "model.safetensors"
Q = "model.decoder.layers.0.self_attn.q_proj.weight"
POS = "model.encoder.embed_positions.weight"


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    """The base at Whisper's native 30 s context (as released checkpoints are) and three experts
    fine-tuned from it, each in another format."""
    root = tmp_path_factory.mktemp("experts")
    base = root / "base30"
    import_model(SMOKE["base_model"]["spec"], base, max_seconds=None, seed=int(SMOKE["seed"]), progress=False)
    sd = load_file(str(base / WEIGHTS))
    g = torch.Generator().manual_seed(7)

    def nudged(scale: float) -> dict[str, torch.Tensor]:
        return {k: v + scale * torch.randn(v.shape, generator=g) if k != POS else v for k, v in sd.items()}

    folder = root / "de-expert"  # a Hugging Face model folder
    shutil.copytree(base, folder)
    (folder / "import_info.json").unlink()
    for stamp in folder.glob("import-*.json"):
        stamp.unlink()
    save_file(nudged(0.01), str(folder / WEIGHTS), metadata={"format": "pt"})
    single = root / "es-expert.safetensors"  # one safetensors file
    save_file(nudged(0.01), str(single), metadata={"format": "pt"})
    adapter = root / "fr-lora"  # a LoRA adapter folder (peft)
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    peft_model.save_pretrained(adapter)
    return {"base": base, "folder": folder, "single": single, "adapter": adapter}


def study_config(experts: dict) -> dict:
    return {
        "experiments": {
            "multilingual": {"enabled": False},
            "domains": {"enabled": False},
            "peft": {"enabled": False},
            "study": {
                "kind": "merge-study",
                "experts": [
                    {"name": "de", "path": str(experts["folder"]), "language": "de"},
                    {"name": "es", "path": str(experts["single"]), "language": "es"},
                    {"name": "fr", "path": str(experts["adapter"]), "language": "fr", "task": "translate"},
                ],
                "data": {"dev": {"sentences": 2, "renderings": 1}, "test": {"sentences": 3, "renderings": 1}},
                "merges": ["task_arithmetic", "ties", "lors"],
                "selection": {"grids": {"task_arithmetic": {"scaling": [0.3, 0.6]}, "ties": False, "lors": False}},
            },
        }
    }


def test_plan_of_a_merge_study(experts):
    config = deep_update(copy.deepcopy(SMOKE), study_config(experts))
    validate_config(config)
    plan = build_plan(config)
    assert plan.experiments == ["study"]
    assert sorted(j for (_, j) in plan.imported) == ["expert-de", "expert-es", "expert-fr"]
    assert not plan.jobs and not plan.theta0_needed  # nothing trained, no θ₀: the experts' base is the start
    assert plan.theta0_weights("study") == "resources/models/random-tiny/model.safetensors"
    assert plan.model_testsets("study", "expert-fr") == ["fr-translate"]
    assert plan.model_testsets("study", "merge-ties") == ["de-transcribe", "es-transcribe", "fr-translate"]
    assert plan.variants[("study", "task_arithmetic")]["selection"]["metric"] == "np"
    assert [r["model"] for r in plan.reports["study"].rows][:3] == ["zeroshot-native", "zeroshot", "experts"]


def test_import_expert_formats_and_crop(experts, tmp_path):
    base5 = tmp_path / "base5"
    import_model(SMOKE["base_model"]["spec"], base5, max_seconds=5, seed=int(SMOKE["seed"]), progress=False)
    assert [expert_format(experts[k]) for k in ("folder", "single", "adapter")] == ["folder", "safetensors", "adapter"]
    ref = load_file(str(base5 / WEIGHTS))
    for key in ("folder", "single", "adapter"):
        out = tmp_path / key
        info = import_expert(experts[key], base5, out, name=key)
        sd = load_file(str(out / WEIGHTS))
        assert set(sd) == set(ref) and all(sd[k].shape == ref[k].shape for k in ref)  # cropped to 5 s
        assert torch.equal(sd[POS], ref[POS]) and info["changed_tensors"] > 0
        assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    # the adapter changed exactly the adapted projections
    sd = load_file(str(tmp_path / "adapter" / WEIGHTS))
    changed = {k for k in sd if not torch.equal(sd[k], ref[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)


def test_bad_experts_are_named(experts, tmp_path):
    with pytest.raises(ExpertError, match="not found"):
        expert_format(tmp_path / "nope")
    bin_only = tmp_path / "old"
    bin_only.mkdir()
    (bin_only / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ExpertError, match=r"safetensors only"):
        expert_format(bin_only)
    sd = load_file(str(experts["single"]))
    sd[Q] = sd[Q][:, :-1].contiguous()
    bad = tmp_path / "bad.safetensors"
    save_file(sd, str(bad))
    with pytest.raises(ExpertError, match=re.escape(Q) + r".*shape"):
        import_expert(bad, experts["base"], tmp_path / "out")
    sd = load_file(str(experts["single"]))
    sd[Q][0, 0] = float("nan")
    save_file(sd, str(bad))
    with pytest.raises(ExpertError, match=r"NaN or Inf\) in tensor " + re.escape(Q)):
        import_expert(bad, experts["base"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_repeated_expert_name_and_unknown_language_stop_the_plan(experts):
    config = deep_update(copy.deepcopy(SMOKE), study_config(experts))
    study = config["experiments"]["study"]
    study["experts"][1]["name"] = "de"
    with pytest.raises(PlanError, match=r"experiments.study.experts.*\['de'\] are used twice"):
        build_plan(config)
    study["experts"][1].update(name="es", language="xx")
    with pytest.raises(PlanError, match=r"'experiments.study.experts\[1\].language'.*'xx'"):
        build_plan(config)


@pytest.mark.slow  # the whole DAG of a study: synthesis, three imports, merges with dev selection, decoding (~1 min)
def test_merge_study_end_to_end(experts, tmp_path):
    extra = tmp_path / "study.yaml"
    extra.write_text(yaml.safe_dump(study_config(experts)))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(ROOT / "presets" / "smoke.yaml"), str(extra), "--cores", "2", "--quiet"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = tmp_path / "results" / "report" / "study"
    with open(report / "table.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    models = [r["model"] for r in rows]
    assert models == [
        "zeroshot-native",
        "zeroshot",
        "experts",
        "merge-task_arithmetic",
        "merge-ties",
        "merge-lors",
    ]
    assert {"de-transcribe", "es-transcribe", "fr-translate"} <= {k.split(":")[-1] for k in rows[0]}
    assert not (report / "claims.md").exists()  # no paper, no claims
    assert (report / "merge_selection.csv").is_file() and (report / "taskvector_cosines.csv").is_file()
    info = json.loads((tmp_path / "results" / "models" / "study" / "expert-fr" / "expert_info.json").read_text())
    assert info["format"] == "adapter" and info["changed_tensors"] > 0
    assert not (tmp_path / "results" / "models" / "adapted-base").exists()  # θ₀ is not made for a study


def test_the_readme_example_config_plans(monkeypatch):
    """The README's complete merge-study config validates and plans as documented (its manifests
    under /data/ taken as present: the plan checks that every manifest is there)."""
    import os.path

    real = os.path.isfile
    monkeypatch.setattr(os.path, "isfile", lambda p: str(p).startswith("/data/") or real(p))
    text = (ROOT / "README.md").read_text()
    start = text.index("```yaml\nbase_model:\n  name: whisper-small")
    block = text[start + len("```yaml\n") : text.index("```", start + 7)]
    config = deep_update(load_config(ROOT / "config.yaml"), yaml.safe_load(block))
    validate_config(config)
    plan = build_plan(config)
    assert plan.experiments == ["my_study"] and not plan.jobs and not plan.theta0_needed
    assert sorted(j for (_, j) in plan.imported) == ["expert-de", "expert-es", "expert-fr_st"]
    assert plan.model_testsets("my_study", "expert-fr_st") == ["fr_st-translate"]
    assert plan.datasets[("my_study", "de", "test")]["manifest"] == "/data/de/test.tsv"
