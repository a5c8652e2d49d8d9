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
from speechmerge.plan_checks import check_plan
from speechmerge.report import write_report
from speechmerge.report.verify import ResultMismatch, verify_results
from speechmerge.training.peft_methods import method_hparams
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
    tsv, clip = manifest_with(tmp_path, np.zeros(8000, dtype=np.float32), subtype="PCM_16")
    config = tmp_path / "manifest.yaml"
    config.write_text(
        "experiments:\n"
        "  multilingual: {enabled: false}\n  domains: {enabled: false}\n"
        "  peft:\n"
        "    cross_domain: []\n"
        f"    data: {{source: manifest, manifests: {{child: {{train: {tsv}, dev: {tsv}, test: {tsv}}}}}}}\n"
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
