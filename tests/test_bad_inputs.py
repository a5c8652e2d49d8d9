"""Bad inputs a careful user could give, stage by stage.

Every case asserts that the error names the culprit (file, row, config key or tensor), that the
run stops (an exception, or a non-zero exit for commands), and that nothing half-written is left
where Snakemake would take it as done (no output file or directory, no temporary beside it).
Tiny tensors and hand-made files only.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from speechmerge.__main__ import main as cli
from speechmerge.config import ROOT, deep_update, load_config, validate_config
from speechmerge.data.adapters import audio_checksums, from_manifest
from speechmerge.data.audio import AudioError
from speechmerge.merging.engine import merge_files, merge_state_dicts
from speechmerge.plan import PlanError, build_plan
from speechmerge.plan.checks import check_plan
from speechmerge.report import write_report
from speechmerge.report.verify import ResultMismatch, verify_results
from speechmerge.training.peft import method_hparams
from speechmerge.training.taskvector import task_vector
from speechmerge.utils import atomic_path, remove_stale_temporaries

Q = "model.encoder.layers.0.self_attn.q_proj.weight"
FC = "model.decoder.layers.0.fc1.weight"
BIAS = "model.decoder.layers.0.fc1.bias"


def tensors(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        Q: scale * torch.randn(8, 8, generator=g),
        FC: scale * torch.randn(16, 8, generator=g),
        BIAS: scale * torch.randn(16, generator=g),
    }


def leftovers(path: Path) -> list[str]:
    """The output itself or any temporary of it (``.{name}.*.tmp``) beside it."""
    found = [path.name] if path.exists() else []
    if path.parent.is_dir():
        found += [p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]
    return found


# ------------------------------------------------------------------ merge --out never deletes user files


def model_dir(path: Path, sd: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    return path


@pytest.fixture()
def models(tmp_path):
    base = model_dir(tmp_path / "base", tensors(0))
    experts = [model_dir(tmp_path / f"e{i}", {k: v + 0.1 * (i + 1) for k, v in tensors(0).items()}) for i in range(2)]
    return base, experts


def run_merge_cli(base, experts, out, *extra, method="task_arithmetic"):
    return cli(
        [
            "merge",
            "--method",
            method,
            "--base",
            str(base),
            "--experts",
            *map(str, experts),
            "--out",
            str(out),
            "--quiet",
            *extra,
        ]
    )


def test_merge_out_with_user_files_is_refused_and_kept(models, tmp_path, capsys):
    base, experts = models
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    assert run_merge_cli(base, experts, out) != 0
    assert str(out) in capsys.readouterr().err
    assert (out / "thesis.tex").read_text() == "years of work" and sorted(os.listdir(out)) == ["thesis.tex"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_merge_out_an_input_model_is_refused(models, capsys):
    base, experts = models
    before = (experts[0] / "model.safetensors").read_bytes()
    assert run_merge_cli(base, experts, experts[0]) != 0
    assert str(experts[0]) in capsys.readouterr().err
    assert (experts[0] / "model.safetensors").read_bytes() == before


def test_merge_out_parent_of_inputs_is_refused(models, tmp_path, capsys):
    base, experts = models
    assert run_merge_cli(base, experts, tmp_path) != 0
    assert str(tmp_path) in capsys.readouterr().err
    assert (base / "model.safetensors").is_file() and (experts[1] / "model.safetensors").is_file()


def test_merge_out_a_file_is_refused(models, tmp_path, capsys):
    base, experts = models
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    assert run_merge_cli(base, experts, out) != 0
    assert str(out) in capsys.readouterr().err and out.read_text() == "mine"


def test_merge_previous_output_needs_overwrite(models, tmp_path, capsys):
    base, experts = models
    out = tmp_path / "merged"
    assert run_merge_cli(base, experts, out) == 0
    info = json.loads((out / "merge_info.json").read_text())
    assert set(info["files"]) == set(os.listdir(out))
    first = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert run_merge_cli(base, experts, out, "--set", "scaling=0.5") != 0
    assert "--overwrite" in capsys.readouterr().err and (out / "model.safetensors").read_bytes() == first
    assert run_merge_cli(base, experts, out, "--set", "scaling=0.5", "--overwrite") == 0
    assert (out / "model.safetensors").read_bytes() != first
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_merge_previous_output_with_a_user_file_is_kept_even_with_overwrite(models, tmp_path, capsys):
    base, experts = models
    out = tmp_path / "merged"
    assert run_merge_cli(base, experts, out) == 0
    (out / "notes.md").write_text("my notes")
    capsys.readouterr()
    assert run_merge_cli(base, experts, out, "--overwrite") != 0
    err = capsys.readouterr().err
    assert str(out) in err and "notes.md" in err and (out / "notes.md").read_text() == "my notes"


def test_merge_into_an_empty_directory(models, tmp_path):
    base, experts = models
    out = tmp_path / "empty"
    out.mkdir()
    assert run_merge_cli(base, experts, out) == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


def test_merge_cli_nan_expert_leaves_nothing(models, tmp_path, capsys):
    base, experts = models
    sd = load_file(str(experts[1] / "model.safetensors"))
    sd[FC][3, 2] = float("nan")
    save_file(sd, str(experts[1] / "model.safetensors"))
    out = tmp_path / "merged"
    assert run_merge_cli(base, experts, out, method="ties") != 0
    err = capsys.readouterr().err
    assert FC in err and str(experts[1]) in err
    assert leftovers(out) == []


# ------------------------------------------------------------------ non-finite tensors in merges


@pytest.fixture()
def tv_files(tmp_path):
    base = tmp_path / "base.safetensors"
    save_file(tensors(0), str(base))
    tvs = []
    for i in range(3):
        p = tmp_path / f"tv{i}.safetensors"
        save_file(tensors(i + 1, 0.01), str(p))
        tvs.append(p)
    return base, tvs


def poison(path: Path, key: str, value: float) -> None:
    sd = load_file(str(path))
    sd[key].view(-1)[5] = value
    save_file(sd, str(path))


@pytest.mark.parametrize(
    "method", ["ties", "task_arithmetic", "tsv_m", "lors", "iso_c", "karcher", "pcb", "boosted_tsv_m"]
)
def test_nan_in_a_task_vector_names_file_and_tensor(tv_files, tmp_path, method):
    base, tvs = tv_files
    poison(tvs[1], Q, float("nan"))
    out = tmp_path / "merged.safetensors"
    with pytest.raises(ValueError, match=re.escape(str(tvs[1]))) as err:
        merge_files(base, tvs, method, out, progress=False)
    assert Q in str(err.value) and "non-finite" in str(err.value)
    assert leftovers(out) == []


def test_inf_in_the_base_names_file_and_tensor(tv_files, tmp_path):
    base, tvs = tv_files
    poison(base, BIAS, float("inf"))
    out = tmp_path / "merged.safetensors"
    with pytest.raises(ValueError, match=re.escape(str(base))) as err:
        merge_files(base, tvs, "soup", out, progress=False)
    assert BIAS in str(err.value)
    assert leftovers(out) == []


def test_nan_in_memory_merge_names_the_tensor():
    tv = tensors(1)
    tv[FC][0, 0] = float("-inf")
    with pytest.raises(ValueError, match=re.escape(f"task vector 1: non-finite values (NaN or Inf) in tensor {FC!r}")):
        merge_state_dicts(tensors(0), [tensors(2), tv], "ties")


@pytest.mark.parametrize("which", ["model", "base"])
def test_task_vector_of_a_nan_checkpoint_names_file_and_tensor(tmp_path, which):
    paths = {"model": tmp_path / "model.safetensors", "base": tmp_path / "base.safetensors"}
    save_file(tensors(1), str(paths["model"]))
    save_file(tensors(0), str(paths["base"]))
    poison(paths[which], FC, float("nan"))
    out = tmp_path / "tv" / "expert.safetensors"
    with pytest.raises(ValueError, match=re.escape(str(paths[which]))) as err:
        task_vector(paths["model"], paths["base"], out)
    assert FC in str(err.value)
    assert leftovers(out) == []


# ------------------------------------------------------------------ scores must follow from hypotheses


def write_eval(
    tmp: Path, model: str, errors: int, *, testset="de-transcribe", n=10, id_prefix="u"
) -> tuple[Path, Path]:
    """A scores JSON and hypotheses JSONL as the evaluate rule writes them (WER = errors / 5n)."""
    from speechmerge.evaluation.decode import write_hypotheses
    from speechmerge.evaluation.metrics import score_texts

    recs = []
    for i in range(n):
        ref = ["eins", "zwei", "drei", "vier", "fuenf"]
        hyp = ["falsch" if j < errors // n + (i < errors % n) else w for j, w in enumerate(ref)]
        recs.append(
            {
                "id": f"{id_prefix}{i}",
                "language": "de",
                "task": "transcribe",
                "reference": " ".join(ref),
                "hypothesis": " ".join(hyp),
                "model": model,
                "testset": testset,
            }
        )
    metrics = score_texts(
        [r["reference"] for r in recs],
        [r["hypothesis"] for r in recs],
        task="transcribe",
        language="de",
        ids=[r["id"] for r in recs],
    )["metrics"]
    scores = {
        "model": model,
        "results": [
            {"model": model, "testset": testset, "task": "transcribe", "language": "de", "n": n, "metrics": metrics}
        ],
    }
    (tmp / f"{model}.json").write_text(json.dumps(scores))
    write_hypotheses(recs, tmp / f"{model}.jsonl")
    return tmp / f"{model}.json", tmp / f"{model}.jsonl"


def rewrite_jsonl(path: Path, change) -> None:
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    recs = change(recs)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_consistent_results_pass(tmp_path):
    files = [write_eval(tmp_path, "zeroshot", 20), write_eval(tmp_path, "joint", 5)]
    assert verify_results([s for s, _ in files], [h for _, h in files]) == 2


def test_swapped_hypotheses_are_refused_before_any_table(tmp_path):
    (s1, h1), (s2, h2) = write_eval(tmp_path, "zeroshot", 20), write_eval(tmp_path, "joint", 5)
    t1, t2 = h1.read_text(), h2.read_text()  # relabel: each model's file holds the other's hypotheses
    h1.write_text(t2.replace('"joint"', '"zeroshot"'))
    h2.write_text(t1.replace('"zeroshot"', '"joint"'))
    spec = {"experiment": "x", "kind": "multilingual"}
    out = tmp_path / "report"
    with pytest.raises(ResultMismatch, match=re.escape(str(h1))) as err:
        write_report(spec, out, scores=[s1, s2], hyps=[h1, h2], n_boot=10)
    assert "'zeroshot'" in str(err.value) and "'de-transcribe'" in str(err.value) and "wer" in str(err.value)
    assert leftovers(out) == []


def test_edited_score_is_refused(tmp_path):
    s, h = write_eval(tmp_path, "joint", 5)
    doc = json.loads(s.read_text())
    doc["results"][0]["metrics"]["cer"] += 1e-6
    s.write_text(json.dumps(doc))
    with pytest.raises(ResultMismatch, match=r"cer recomputed") as err:
        verify_results([s], [h])
    assert str(h) in str(err.value) and "'joint'" in str(err.value)


def test_hypotheses_of_another_model_in_the_file_are_refused(tmp_path):
    s, h = write_eval(tmp_path, "joint", 5)
    rewrite_jsonl(h, lambda recs: [{**r, "model": "zeroshot"} for r in recs])
    with pytest.raises(ResultMismatch, match=re.escape(f"{h}: hypotheses of model 'zeroshot'")):
        verify_results([s], [h])


def test_duplicate_utterance_id_is_refused(tmp_path):
    s, h = write_eval(tmp_path, "joint", 5)
    rewrite_jsonl(h, lambda recs: [{**r, "id": "u0"} if i == 3 else r for i, r in enumerate(recs)])
    with pytest.raises(
        ResultMismatch, match=re.escape(f"{h}: model 'joint', test set 'de-transcribe': utterance id 'u0'")
    ):
        verify_results([s], [h])


def test_hypothesis_count_other_than_n_is_refused(tmp_path):
    s, h = write_eval(tmp_path, "joint", 5)
    rewrite_jsonl(h, lambda recs: recs[:-1])
    with pytest.raises(ResultMismatch, match=r"9 hypotheses, the scores in .* say n=10") as err:
        verify_results([s], [h])
    assert str(h) in str(err.value)


def test_models_scored_on_different_utterances_are_refused(tmp_path):
    a = write_eval(tmp_path, "zeroshot", 20)
    b = write_eval(tmp_path, "joint", 5, id_prefix="v")
    with pytest.raises(ResultMismatch, match=r"utterance ids differ from those of model 'zeroshot'") as err:
        verify_results([a[0], b[0]], [a[1], b[1]])
    assert str(b[1]) in str(err.value) and "'de-transcribe'" in str(err.value)


def test_scores_without_hypotheses_are_refused(tmp_path):
    a = write_eval(tmp_path, "zeroshot", 20)
    b = write_eval(tmp_path, "joint", 5)
    with pytest.raises(ResultMismatch, match=re.escape(f"{b[0]}: no hypotheses for model 'joint'")):
        verify_results([a[0], b[0]], [a[1]])


# ------------------------------------------------------------------ config errors before any job runs


SMOKE = load_config(ROOT / "config.yaml", ROOT / "presets" / "smoke.yaml")
CORPUS = ROOT / "resources" / "text" / "corpus.tsv"


def plan_error(override: dict, corpus: Path = CORPUS) -> str:
    config = deep_update(copy.deepcopy(SMOKE), override)
    validate_config(config)
    with pytest.raises(PlanError) as err:
        check_plan(build_plan(config), corpus=corpus)
    return str(err.value)


@pytest.mark.parametrize(
    "override, key, detail",
    [
        (
            {"experiments": {"peft": {"methods": {"lora": {"peft": {"r": 0}}}}}},
            "experiments.peft.methods.lora",
            "peft.r",
        ),
        (
            {"experiments": {"peft": {"methods": {"lora": {"peft": {"lora_dropout": 1.0}}}}}},
            "experiments.peft.methods.lora",
            "peft.lora_dropout",
        ),
        (
            {"experiments": {"peft": {"methods": {"adalora": {"peft": {"init_r": 4, "target_r": 8}}}}}},
            "experiments.peft.methods.adalora",
            "peft.target_r",
        ),
        (
            {"experiments": {"peft": {"methods": {"adalora": {"peft": {"tinit": 5, "tfinal": 5}}}}}},
            "experiments.peft.methods.adalora",
            "tinit",
        ),
        (
            {"experiments": {"peft": {"methods": {"s2lora": {"peft": {"l1_weight": -0.01}}}}}},
            "experiments.peft.methods.s2lora",
            "peft.l1_weight",
        ),
        (
            {"experiments": {"peft": {"methods": {"s2lora": {"peft": {"threshold": 1.0}}}}}},
            "experiments.peft.methods.s2lora",
            "peft.threshold",
        ),
        (
            {"experiments": {"peft": {"methods": {"s2lora": {"peft": {"dropout": -0.1}}}}}},
            "experiments.peft.methods.s2lora",
            "peft.dropout",
        ),
        (
            {"experiments": {"peft": {"methods": {"s2lora": {"peft": {"rank": 4}}}}}},
            "experiments.peft.methods.s2lora",
            "rank",
        ),
        (
            {"experiments": {"multilingual": {"hparams": {"ties": {"keep_fraction": 1.5}}}}},
            "experiments.multilingual.hparams.ties",
            "keep_fraction",
        ),
        (
            {"experiments": {"multilingual": {"hparams": {"ties": {"density": 0.2}}}}},
            "experiments.multilingual.hparams.ties",
            "density",
        ),
        (
            {
                "experiments": {
                    "domains": {"sweeps": [{"method": "boosted_tsv_m", "param": "beta", "values": [0.3, "high"]}]}
                }
            },
            "experiments.domains.sweeps[0] (beta)",
            "beta",
        ),
        (
            {"experiments": {"multilingual": {"data": {"train": {"sentences": 500}}}}},
            "experiments.multilingual.data.train.sentences",
            "has 220",
        ),
        ({"audio": {"max_seconds": 2.5}}, "audio.max_seconds", "whole number"),
        (
            {"seeds": [0, 1], "experiments": {"multilingual": {"hparams": {"ties": {"keep_fraction": 1.5}}}}},
            "experiments.multilingual.hparams.ties",
            "keep_fraction",
        ),
        (
            {"seeds": [0, 1], "experiments": {"peft": {"methods": {"s2lora": {"peft": {"threshold": 1.0}}}}}},
            "experiments.peft.methods.s2lora",
            "peft.threshold",
        ),
        (
            {
                "experiments": {
                    "multilingual": {"sweeps": [{"method": "lors", "param": "rank_fraction", "values": [2.0]}]}
                }
            },
            "experiments.multilingual.sweeps[0] (rank_fraction)",
            "rank_fraction",
        ),
    ],
)
def test_config_errors_name_the_key_at_plan_time(override, key, detail):
    msg = plan_error(override)
    assert f"'{key}'" in msg and detail in msg, msg


def test_duplicate_sentence_id_in_corpus_is_a_plan_error(tmp_path):
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    sid = lines[7].split("\t")[0]
    other = lines[8].split("\t")
    lines[8] = "\t".join([sid] + other[1:])
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    msg = plan_error({}, corpus=corpus)
    assert "'corpus'" in msg and str(corpus) in msg and f"duplicate sid {sid!r}" in msg


def test_s2lora_negative_l1_weight_fails_when_the_method_is_built():
    with pytest.raises(ValueError, match=r"peft\.l1_weight must be a number >= 0, got -1"):
        method_hparams("s2lora", {"l1_weight": -1})


def test_snakemake_dry_run_names_the_config_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiments:\n  peft:\n    methods:\n      adalora: {peft: {init_r: 2, target_r: 3}}\n")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(ROOT / "presets" / "smoke.yaml"),
        str(bad),
        "-n",
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert (
        "experiments.peft.methods.adalora" in proc.stderr + proc.stdout and "peft.target_r" in proc.stderr + proc.stdout
    )
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------ audio files of a manifest


def manifest_with(tmp_path: Path, wave: np.ndarray, subtype="FLOAT") -> tuple[Path, Path]:
    clips = tmp_path / "clips"
    clips.mkdir(exist_ok=True)
    good = np.sin(np.linspace(0, 200, 8000)).astype(np.float32) * 0.1
    sf.write(clips / "a.wav", good, 16000, subtype="PCM_16")
    sf.write(clips / "b.wav", wave, 16000, subtype=subtype)
    tsv = tmp_path / "test.tsv"
    tsv.write_text(
        "audio\tlanguage\ttranscript\nclips/a.wav\tde\tHallo Welt.\nclips/b.wav\tde\tGuten Tag.\n", encoding="utf-8"
    )
    return tsv, clips / "b.wav"


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_sample_names_file_and_row(tmp_path, value):
    wave = np.zeros(8000, dtype=np.float32)
    wave[100] = value
    tsv, bad = manifest_with(tmp_path, wave)
    with pytest.raises(AudioError, match=re.escape(str(bad))) as err:
        from_manifest(tsv, progress=False)
    assert f"{tsv} row 2" in str(err.value) and "NaN or infinite" in str(err.value)


def test_audio_checksum_changes_with_the_audio(tmp_path):
    tsv, clip = manifest_with(tmp_path, np.zeros(8000, dtype=np.float32), subtype="PCM_16")
    before = audio_checksums(tsv)
    assert set(before["files"]) == {str(tmp_path / "clips" / "a.wav"), str(clip)}
    stat = clip.stat()
    sf.write(clip, np.full(8000, 0.25, dtype=np.float32), 16000, subtype="PCM_16")
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime: only the content tells
    assert audio_checksums(tsv)["sha256"] != before["sha256"]


def test_manifest_missing_audio_checksum_names_the_file(tmp_path):
    tsv, clip = manifest_with(tmp_path, np.zeros(800, dtype=np.float32))
    clip.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tsv}: audio file not found: {clip}")):
        audio_checksums(tsv)


# ------------------------------------------------------------------ after a kill; files users share


def test_stale_temporaries_of_a_killed_writer_are_removed_on_rerun(tmp_path):
    out = tmp_path / "expert.safetensors"
    stale_file = tmp_path / ".expert.safetensors.ab12cd_9.tmp"
    stale_file.write_bytes(b"x" * 1000)
    stale_dir = tmp_path / ".expert.safetensors.zz99yy00.tmp"
    stale_dir.mkdir()
    (stale_dir / "part").write_text("x")
    keep = [
        tmp_path / ".other.safetensors.ab12cd_9.tmp",
        tmp_path / "expert.safetensors.tmp",
        tmp_path / ".expert.safetensors.notes.tmp.txt",
    ]
    for p in keep:
        p.write_text("not ours")
    with atomic_path(out) as tmp:
        tmp.write_text("done")
    assert out.read_text() == "done" and not stale_file.exists() and not stale_dir.exists()
    assert all(p.read_text() == "not ours" for p in keep)


def test_interrupted_write_leaves_no_temporary(tmp_path):
    out = tmp_path / "scores.json"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert leftovers(out) == [] and remove_stale_temporaries(out) == []


@pytest.fixture()
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_task_vector_and_merge_honour_the_umask(tmp_path, umask_027):
    save_file(tensors(1), str(tmp_path / "m.safetensors"))
    save_file(tensors(0), str(tmp_path / "b.safetensors"))
    tv = tmp_path / "tv.safetensors"
    task_vector(tmp_path / "m.safetensors", tmp_path / "b.safetensors", tv)
    merged = tmp_path / "merged.safetensors"
    merge_files(tmp_path / "b.safetensors", [tv], "task_arithmetic", merged, progress=False)
    for p in (tv, merged):
        assert (p.stat().st_mode & 0o777) == 0o640, (p, oct(p.stat().st_mode))


def test_model_directory_honours_the_umask(models, tmp_path, umask_027):
    base, experts = models
    out = tmp_path / "merged"
    assert run_merge_cli(base, experts, out) == 0
    assert (out.stat().st_mode & 0o777) == 0o750
    for p in out.iterdir():
        assert (p.stat().st_mode & 0o777) == 0o640, p


def test_task_vector_is_byte_reproducible(tmp_path):
    save_file(tensors(1), str(tmp_path / "m.safetensors"))
    save_file(tensors(0), str(tmp_path / "b.safetensors"))
    meta = {f"key{i}": i for i in range(12)} | {"provenance": {"b": 1, "a": 2}}
    blobs = set()
    for i in range(6):
        out = tmp_path / f"tv{i}.safetensors"
        task_vector(tmp_path / "m.safetensors", tmp_path / "b.safetensors", out, meta)
        blobs.add(out.read_bytes())
    assert len(blobs) == 1
    loaded = load_file(str(tmp_path / "tv0.safetensors"))
    assert torch.equal(loaded[FC], tensors(1)[FC] - tensors(0)[FC])


def _snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(ROOT / "presets" / "smoke.yaml"),
        str(config),
        "--cores",
        "1",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # three Snakemake runs (about a minute on 2 busy cores)
def test_editing_a_manifest_audio_file_rebuilds_its_split(tmp_path):
    """The manifest and its audio are inputs (through the split's audio checksum)."""
    tsv, clip = manifest_with(tmp_path, 0.1 * np.cos(np.linspace(0, 300, 8000)).astype(np.float32), subtype="PCM_16")
    config = tmp_path / "manifest.yaml"
    config.write_text(
        "experiments:\n"
        "  multilingual: {enabled: false}\n  domains: {enabled: false}\n"
        "  peft:\n"
        "    cross_domain: []\n"
        f"    data: {{source: manifest, manifests: {{child: {{train: {tsv}, dev: {tsv}, test: {tsv}}}}},\n"
        "           train: {sentences: null}, dev: {sentences: null}, test: {sentences: null}}\n"
        "    methods: {full: {lr: 1.0e-5}}\n"
    )
    target = "results/data/peft/child/test.parquet"
    split = tmp_path / target
    proc = _snakemake(tmp_path, config, target)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((split.parent / "test.audio.json").read_text())["files"][str(clip)]
    proc = _snakemake(tmp_path, config, target, "-n")
    assert proc.returncode == 0 and "synthesize_corpus" not in proc.stdout + proc.stderr
    sf.write(clip, np.full(8000, 0.25, dtype=np.float32), 16000, subtype="PCM_16")
    proc = _snakemake(tmp_path, config, target, "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "audio_checksum" in out and "synthesize_corpus" in out, out[-3000:]


# ================================================================== second round: data loss, silent wrong results
# Each case: the run stops (an exception, or a non-zero exit), the message names the culprit,
# and nothing the user owns is touched.


def config_error(override: dict) -> str:
    from speechmerge.config import ConfigError

    with pytest.raises(ConfigError) as err:
        validate_config(deep_update(copy.deepcopy(SMOKE), override))
    return str(err.value)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content: what must be the same before and after."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ config values that become paths


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x", "-x", "a..b", ".hidden"])
def test_base_model_name_must_be_one_path_component(name):
    msg = config_error({"base_model": {"name": name}})
    assert "'base_model.name'" in msg and "path component" in msg


def test_base_model_name_dotdot_deletes_nothing_in_a_real_run(tmp_path):
    """The original report: name '..' made the import job replace all of resources/."""
    mine = tmp_path / "resources" / "corpus" / "my_recordings.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("hours of work")
    proc = _snakemake(
        tmp_path, ROOT / "presets" / "smoke.yaml", "--config", "base_model={name: '..', spec: 'random:tiny'}"
    )
    assert proc.returncode != 0 and "base_model.name" in proc.stdout + proc.stderr
    assert mine.read_text() == "hours of work" and not (tmp_path / "results").exists()


def test_sweep_param_must_be_a_name():
    msg = config_error(
        {"experiments": {"multilingual": {"sweeps": [{"method": "lors", "param": "../x", "values": [1]}]}}}
    )
    assert "'experiments.multilingual.sweeps[0].param'" in msg


def test_sweep_value_that_would_be_a_path_is_refused():
    msg = plan_error(
        {"experiments": {"multilingual": {"sweeps": [{"method": "ties", "param": "scaling", "values": ["../../x"]}]}}}
    )
    assert "experiments.multilingual.merges / sweeps" in msg and "'ties@scaling=../../x'" in msg


def test_atomic_path_refuses_a_path_that_leaves_its_folder(tmp_path):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "data.txt").write_text("mine")
    before = tree(tmp_path)
    from speechmerge.utils import UnsafePathError

    for bad in (tmp_path / "keep" / "..", f"{tmp_path}/keep/../..", ".."):
        with pytest.raises(UnsafePathError, match="does not name a file or folder"):
            with atomic_path(bad, is_dir=True) as tmp:
                (tmp / "x").write_text("x")
    assert tree(tmp_path) == before


def test_atomic_path_never_replaces_through_a_link(tmp_path):
    from speechmerge.utils import UnsafePathError

    target = tmp_path / "my_models"
    target.mkdir()
    (target / "weights.bin").write_text("mine")
    link = tmp_path / "out"
    link.symlink_to(target)
    with pytest.raises(UnsafePathError, match=re.escape(str(link))):
        with atomic_path(link, is_dir=True) as tmp:
            (tmp / "x").write_text("x")
    assert (target / "weights.bin").read_text() == "mine" and link.is_symlink()


def test_remove_output_tree_refuses_dotdot(tmp_path):
    from speechmerge.utils import UnsafePathError, remove_output_tree

    (tmp_path / "a").mkdir()
    (tmp_path / "mine.txt").write_text("mine")
    with pytest.raises(UnsafePathError):
        remove_output_tree(tmp_path / "a" / "..")
    assert (tmp_path / "mine.txt").read_text() == "mine"


# ------------------------------------------------------------------ a model folder the user placed


@pytest.fixture()
def in_tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _user_model(root: Path, name: str) -> Path:
    folder = root / "resources" / "models" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    (folder / "model.safetensors").write_bytes(b"my fine-tuned weights")
    return folder


def test_a_user_model_at_the_import_folder_is_neither_used_nor_replaced(in_tmp_cwd):
    folder = _user_model(in_tmp_cwd, "my-whisper")
    before = tree(folder)
    config = deep_update(SMOKE, {"base_model": {"name": "my-whisper", "spec": "random:tiny"}})
    with pytest.raises(PlanError) as err:
        build_plan(config).check_imports()
    msg = str(err.value)
    assert "'base_model.name'" in msg and "resources/models/my-whisper" in msg and "no import_info.json" in msg
    assert tree(folder) == before


def test_hf_spec_reading_the_folder_the_import_writes_is_refused(in_tmp_cwd):
    """The issue's case: spec hf:resources/models/<name> with name <name>; the 5 s crop never ran."""
    folder = _user_model(in_tmp_cwd, "mine")
    before = tree(folder)
    config = deep_update(SMOKE, {"base_model": {"name": "mine", "spec": "hf:resources/models/mine"}})
    with pytest.raises(PlanError) as err:
        build_plan(config).check_imports()
    assert "'base_model.spec'" in str(err.value) and "'mine-imported'" in str(err.value)
    assert tree(folder) == before


def test_hf_spec_above_the_import_folder_is_refused(in_tmp_cwd):
    _user_model(in_tmp_cwd, "other")
    config = deep_update(SMOKE, {"base_model": {"name": "tiny", "spec": "hf:resources/models"}})
    with pytest.raises(PlanError, match=r"'base_model.spec'.*reads resources/models"):
        build_plan(config).check_imports()


def test_an_import_with_another_crop_is_rebuilt_not_reused(tmp_path):
    """The folder's provenance file is named by what it was made from; the plan asks for the one
    of its own spec and context, so a folder imported at another context is rebuilt."""
    from speechmerge.models import import_model
    from speechmerge.models.spec import is_stamp

    plan5 = build_plan(deep_update(SMOKE, {"audio": {"max_seconds": 5}}))
    plan30 = build_plan(deep_update(SMOKE, {"audio": {"max_seconds": None}}))
    assert plan5.import_stamp() != plan30.import_stamp()
    assert Path(plan5.import_stamp(native=True)).name == Path(plan30.import_stamp()).name  # both uncropped
    out = tmp_path / "m"
    import_model(SMOKE["base_model"]["spec"], out, max_seconds=None, seed=SMOKE.get("seed", 0), progress=False)
    stamps = [p.name for p in out.iterdir() if is_stamp(p.name)]
    assert stamps == [Path(plan30.import_stamp()).name] and Path(plan5.import_stamp()).name not in stamps
    assert plan5.import_stamp().format(model_name=plan5.base_name) in plan5.all_targets()


def test_report_refuses_scores_decoded_at_another_context(tmp_path):
    from speechmerge.report.verify import check_contexts

    scores, _ = write_eval(tmp_path, "zeroshot", 5)
    doc = json.loads(scores.read_text())
    doc["results"][0]["decoding"] = {"context_seconds": 30.0}
    scores.write_text(json.dumps(doc))
    spec = {"context_s": 5, "rows": [{"model": "zeroshot", "context_s": 5}]}
    with pytest.raises(ResultMismatch, match=r"zeroshot.*30 s encoder context.*its row is at 5 s"):
        check_contexts(spec, [scores])
    check_contexts({"context_s": 5, "rows": [{"model": "zeroshot", "context_s": 30}]}, [scores])


# ------------------------------------------------------------------ utterances longer than the context


class _Utt:
    def __init__(self, uid: str, seconds: float):
        self.id, self.audio = uid, np.zeros(int(seconds * 16000), dtype=np.float32)


def test_long_utterance_error_names_the_file_and_ids():
    from speechmerge.evaluation.evaluate_model import _long_utterances

    utts = [_Utt("u1", 3.0), _Utt("u2", 7.5), _Utt("u3", 4.0)]
    with pytest.raises(ValueError) as err:
        _long_utterances({"path": "results/data/x/de/test.parquet"}, utts, 5.0, "error", None)
    msg = str(err.value)
    assert "results/data/x/de/test.parquet" in msg and "['u2']" in msg and "on_long_utterance" in msg


def test_long_utterance_skip_uses_the_experiments_context_for_every_model():
    from speechmerge.evaluation.evaluate_model import _long_utterances

    utts = [_Utt("u1", 3.0), _Utt("u2", 7.5), _Utt("u3", 4.0)]
    for model_context in (5.0, 30.0):  # the cropped models and the 30 s zero-shot leave out the same
        kept, skipped = _long_utterances({"path": "t"}, utts, model_context, "skip", 5.0)
        assert [u.id for u in kept] == ["u1", "u3"] and skipped == 1
    with pytest.raises(ValueError, match="every utterance is longer than 2 s"):
        _long_utterances({"path": "t"}, utts, 30.0, "skip", 2.0)


def test_truncated_utterances_are_counted_in_every_table_footnote(tmp_path):
    from speechmerge.report.provenance import long_utterance_note, run_provenance

    paths = []
    for model, ctx, k in (("zeroshot-native", 30.0, 0), ("zeroshot", 5.0, 2), ("joint", 5.0, 2)):
        p = tmp_path / f"{model}.json"
        p.write_text(json.dumps({"results": [{"model": model, "testset": "de-transcribe", "n": 16, "metrics": {},
                                              "decoding": {"n_truncated": k, "context_seconds": ctx}}]}))  # fmt: skip
        paths.append(p)
    note = long_utterance_note(run_provenance({"context_s": 5}, paths, {}))
    assert note is not None and "truncated" in note and "de-transcribe 2 of 16 at 5 s" in note
    assert long_utterance_note(run_provenance({"context_s": 5}, paths[:1], {})) is None  # none: no note


def test_clips_left_out_as_bad_audio_are_counted_in_every_table_footnote(tmp_path):
    from speechmerge.report.provenance import bad_audio_note, run_provenance

    score = tmp_path / "m.json"
    score.write_text(json.dumps({"results": [{"model": "m", "testset": "de-transcribe", "n": 9, "metrics": {},
                                              "decoding": {"n_bad_audio_skipped": 2}}]}))  # fmt: skip
    info = {"skipped_audio": {"results/data/lors_group1/de/train.parquet": 3}}
    note = bad_audio_note(run_provenance({}, [score], {"expert-de": ("train_info.json", info)}))
    assert "data.on_bad_audio: skip" in note
    assert "test set de-transcribe 2" in note and "training data de/train 3" in note
    assert bad_audio_note(run_provenance({}, [], {})) is None  # none left out: no note


def test_unknown_long_utterance_policy_names_the_key():
    msg = config_error({"evaluation": {"on_long_utterance": "drop"}})
    assert "'evaluation.on_long_utterance'" in msg


# ------------------------------------------------------------------ merge CLI: output always loadable


def test_merge_base_a_file_is_refused(models, tmp_path, capsys):
    base, experts = models
    out = tmp_path / "merged"
    assert run_merge_cli(base / "model.safetensors", experts, out) != 0
    err = capsys.readouterr().err
    assert f"--base {base / 'model.safetensors'}: a file" in err and "config.json" in err
    assert leftovers(out) == []


def test_merge_base_folder_without_config_is_refused(models, tmp_path, capsys):
    base, experts = models
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.safetensors").write_bytes((base / "model.safetensors").read_bytes())
    out = tmp_path / "merged"
    assert run_merge_cli(bare, experts, out) != 0
    assert f"--base {bare}: a folder without config.json" in capsys.readouterr().err and leftovers(out) == []


def test_merge_out_not_writable_names_the_path(models, tmp_path, capsys, monkeypatch):
    import errno
    import tempfile

    base, experts = models

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    out = tmp_path / "ro" / "merged"
    assert run_merge_cli(base, experts, out) != 0
    err = capsys.readouterr().err
    assert f"cannot write {out}" in err and "Read-only file system" in err and "Traceback" not in err


def test_merge_on_a_full_disk_names_the_path_and_leaves_nothing(models, tmp_path, capsys, monkeypatch):
    import errno

    from speechmerge.merging import safetensors_io

    base, experts = models

    def full(self, key, tensor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors_io.SafetensorsWriter, "write", full)
    out = tmp_path / "merged"
    assert run_merge_cli(base, experts, out) != 0
    err = capsys.readouterr().err
    assert f"cannot write --out {out}" in err and "No space left on device" in err and leftovers(out) == []


def test_two_merges_into_one_new_out_collide_early_not_late(models, tmp_path, capsys):
    """A second writer finds the first one's temporary in use: it stops at once, naming --out,
    and leaves the first writer's temporary alone."""
    import fcntl

    base, experts = models
    out = tmp_path / "merged"
    live = tmp_path / ".merged.abcd1234.tmp"  # the first writer's temporary, still being written
    live.mkdir()
    (live / "model.safetensors").write_bytes(b"half")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert run_merge_cli(base, experts, out) != 0
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert str(out) in err and "another process is writing it" in err
    assert (live / "model.safetensors").read_bytes() == b"half" and not out.exists()


def test_a_killed_writers_temporary_is_still_cleaned(models, tmp_path):
    base, experts = models
    dead = tmp_path / ".merged.dead0000.tmp"  # nobody holds it
    dead.mkdir()
    assert run_merge_cli(base, experts, tmp_path / "merged") == 0 and not dead.exists()


# ------------------------------------------------------------------ keys that were ignored


@pytest.mark.parametrize(
    "order, detail",
    [(["de", "de"], "listed more than once: ['de']"), (["de"], "missing: ['es']")],
)
def test_sequential_order_must_list_every_subset_once(order, detail):
    msg = plan_error(
        {"experiments": {"multilingual": {"languages": ["de", "es"], "sequential": {"enabled": True, "order": order}}}}
    )
    assert "experiments.multilingual.sequential.order" in msg and detail in msg


def test_joint_order_is_refused():
    msg = plan_error({"experiments": {"multilingual": {"joint": {"order": ["de"]}}}})
    assert "'experiments.multilingual.joint.order'" in msg


@pytest.mark.parametrize(
    "data, unused",
    [
        ({"source": "manifest", "manifests": {}, "train": {"renderings": 2}}, "train.renderings"),
        ({"hf_name": "facebook/covost2"}, "hf_name"),
        ({"manifests": {"de": {"test": "x.tsv"}}}, "manifests"),
    ],
)
def test_data_keys_the_source_does_not_use_are_refused(data, unused):
    msg = plan_error({"experiments": {"multilingual": {"data": data}}})
    assert "'experiments.multilingual.data'" in msg and unused in msg


def test_manifest_sentences_are_honoured(tmp_path):
    tsv, _ = manifest_with(tmp_path, 0.1 * np.sin(np.linspace(0, 100, 8000)).astype(np.float32))
    assert len(from_manifest(tsv, max_examples=1, progress=False)) == 1
    from speechmerge.data.adapters import AdapterError

    with pytest.raises(AdapterError, match=re.escape(f"{tsv}: 5 utterances asked for (data.test.sentences)")):
        from_manifest(tsv, max_examples=5, progress=False)


@pytest.mark.parametrize("values", [[0.3, 0.3], [1, 1.0]])
def test_sweep_with_a_repeated_value_is_refused(values):
    msg = plan_error(
        {"experiments": {"multilingual": {"sweeps": [{"method": "lors", "param": "scaling", "values": values}]}}}
    )
    assert "'experiments.multilingual.sweeps[0] (scaling)'" in msg and "listed twice" in msg


def test_two_sweeps_of_one_parameter_are_refused():
    sweep = {"method": "lors", "param": "scaling", "values": [0.2]}
    msg = plan_error({"experiments": {"multilingual": {"sweeps": [sweep, {**sweep, "values": [0.4]}]}}})
    assert "'experiments.multilingual.sweeps[1]'" in msg and "sweeps[0] already sweeps lors.scaling" in msg


# ------------------------------------------------------------------ audio that is silent once mono


def _write_manifest_row(tmp_path: Path, wave: np.ndarray) -> tuple[Path, Path]:
    clip = tmp_path / "clip.wav"
    sf.write(clip, wave, 16000, subtype="FLOAT")
    tsv = tmp_path / "m.tsv"
    tsv.write_text("audio\tlanguage\ttranscript\nclip.wav\tde\tHallo.\n", encoding="utf-8")
    return tsv, clip


def test_stereo_whose_channels_cancel_names_the_file(tmp_path):
    left = 0.3 * np.sin(np.linspace(0, 400, 16000)).astype(np.float32)
    tsv, clip = _write_manifest_row(tmp_path, np.stack([left, -left], axis=1))
    with pytest.raises(AudioError) as err:
        from_manifest(tsv, progress=False)
    assert str(clip) in str(err.value) and "channels cancel" in str(err.value) and f"{tsv} row 1" in str(err.value)


@pytest.mark.parametrize("level", [0.0, 2e-4])
def test_silent_or_near_silent_audio_names_the_file(tmp_path, level):
    tsv, clip = _write_manifest_row(tmp_path, np.full(16000, level, dtype=np.float32))
    with pytest.raises(AudioError, match=re.escape(str(clip)) + ".*silent"):
        from_manifest(tsv, progress=False)


def test_dataset_array_whose_channels_cancel_is_refused():
    from speechmerge.data.adapters import _audio_to_wave

    left = 0.3 * np.sin(np.linspace(0, 400, 16000)).astype(np.float32)
    with pytest.raises(AudioError, match="covost2 row 7.*channels cancel"):
        _audio_to_wave({"array": np.stack([left, -left]), "sampling_rate": 16000}, "covost2 row 7")


# ------------------------------------------------------------------ errors that name the culprit


@pytest.mark.parametrize("values", [[1.0, 1.0], [1, 1.0]])
def test_grid_with_a_repeated_value_names_experiment_and_method(values):
    msg = plan_error({"experiments": {"multilingual": {"selection": {"grids": {"ties": {"scaling": values}}}}}})
    assert "'experiments.multilingual.selection.grids.ties.scaling'" in msg and "listed twice" in msg


def test_numbers_given_as_strings_on_the_command_line_are_read_as_numbers():
    config = deep_update(SMOKE, {"seeds": ["0", "1"], "training": {"steps": "5", "lr": "1e-4"}})
    validate_config(config)
    assert config["seeds"] == [0, 1] and config["training"]["steps"] == 5 and config["training"]["lr"] == 1e-4


def test_a_non_number_seed_says_how_to_write_it():
    msg = config_error({"seeds": ["zero"]})
    assert "'seeds[0]'" in msg and "--config 'seeds=[0, 1]'" in msg


def test_snakemake_config_seeds_list_from_the_command_line(tmp_path):
    proc = _snakemake(tmp_path, ROOT / "presets" / "smoke.yaml", "-n", "--quiet", "--config", "seeds=[0,1]")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_latin1_manifest_names_the_file_and_line(tmp_path):
    from speechmerge.data.adapters import AdapterError

    tsv = tmp_path / "m.tsv"
    tsv.write_bytes("audio\tlanguage\ttranscript\na.wav\tfr\tça va\n".encode("latin-1"))
    with pytest.raises(AdapterError, match=re.escape(f"{tsv}: not UTF-8 text: byte 0xe7 on line 2")):
        from_manifest(tsv, progress=False)


def test_truncated_score_file_names_the_file_at_report_time(tmp_path):
    from speechmerge.utils import ResultFileError

    scores, hyps = write_eval(tmp_path, "zeroshot", 5)
    scores.write_text(scores.read_text()[:40])
    with pytest.raises(ResultFileError, match=re.escape(str(scores)) + ": not valid JSON.*snakemake --forcerun"):
        verify_results([scores], [hyps])
    with pytest.raises(ResultFileError, match=re.escape(str(scores))):
        write_report(
            {"experiment": "x", "kind": "multilingual", "rows": []}, tmp_path / "rep", scores=[scores], hyps=[hyps]
        )
    assert not (tmp_path / "rep").exists()


def test_truncated_hypotheses_file_names_the_file_and_line(tmp_path):
    scores, hyps = write_eval(tmp_path, "zeroshot", 5)
    text = hyps.read_text()
    hyps.write_text(text[:-30])
    last = text.count("\n")
    with pytest.raises(ValueError, match=re.escape(f"{hyps}:{last}: not JSON") + ".*snakemake --forcerun"):
        verify_results([scores], [hyps])


def test_truncated_parquet_split_names_the_file(tmp_path):
    from speechmerge.data.io import read_examples

    split = tmp_path / "test.parquet"
    split.write_bytes(b"PAR1" + b"\0" * 100)
    with pytest.raises(ValueError, match=re.escape(f"{split}: not a readable parquet split")):
        read_examples(split)
