"""Streaming merge engine, CLI and workflow script: equality with the in-memory merge,
bit-identical reruns, input checks naming the tensor/file, atomic output, delta-only."""

from __future__ import annotations

import argparse
import json
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from speechmerge.merging import MergeMethod, get_method, streaming
from speechmerge.merging import cli as merge_cli
from speechmerge.merging.engine import merge_files, merge_models, merge_state_dicts
from speechmerge.merging.safetensors_io import SafetensorsWriter, TensorSpec, read_header

REPO = Path(__file__).resolve().parents[1]
EMBED = "model.decoder.embed_tokens.weight"


def make_base() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        EMBED: torch.randn(40, 8, generator=g).half(),
        "model.encoder.layers.0.self_attn.q_proj.weight": torch.randn(8, 8, generator=g).half(),
        "model.encoder.layers.0.self_attn.q_proj.bias": torch.randn(8, generator=g).half(),
        "model.encoder.layer_norm.weight": torch.ones(8, dtype=torch.float16),
        "scalar": torch.tensor(0.5, dtype=torch.float16),
        "empty": torch.zeros(0, 3, dtype=torch.float16),
    }


def make_tvs(base: dict[str, torch.Tensor], n: int, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{k: 0.01 * torch.randn(v.shape, generator=g) for k, v in base.items()} for _ in range(n)]


@pytest.fixture
def files(tmp_path):
    base = make_base()
    tvs = make_tvs(base, 3)
    save_file(base, tmp_path / "base.safetensors")
    paths = []
    for i, tv in enumerate(tvs):
        paths.append(tmp_path / f"expert-{i}.safetensors")
        save_file(tv, paths[-1])
    return SimpleNamespace(dir=tmp_path, base=base, tvs=tvs, base_path=tmp_path / "base.safetensors", tv_paths=paths)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


class WholeTensorMean(MergeMethod):
    """A method without the chunked protocol (whole tensors through merge_tensor)."""

    name = "test_whole_mean"
    defaults = {"scaling": 1.0}

    def merge_tensor(self, base, deltas, ctx):
        return self.hparams["scaling"] * sum(deltas) / len(deltas)


class FailsOnSecondTensor(MergeMethod):
    name = "test_fails"
    calls = 0

    def merge_tensor(self, base, deltas, ctx):
        type(self).calls += 1
        if type(self).calls == 2:
            raise RuntimeError("boom")
        return torch.zeros_like(base)


# --- equality, determinism, format -------------------------------------------------------------


@pytest.mark.parametrize("chunk_elems", [None, 16])
@pytest.mark.parametrize("name", ["ties", "dare_ties", "karcher", "pcb", "sce", "model_stock"])
def test_streaming_equals_in_memory(files, monkeypatch, name, chunk_elems):
    if chunk_elems:
        monkeypatch.setattr(streaming, "CHUNK_ELEMS", chunk_elems)  # the embedding spans 20 chunks
    method = get_method(name)
    out = files.dir / "merged.safetensors"
    merge_files(files.base_path, files.tv_paths, method, out, seed=3, progress=False)
    streamed = load_file(out)
    in_memory = merge_state_dicts(files.base, files.tvs, method, seed=3)
    assert set(streamed) == set(in_memory)
    for key, t in in_memory.items():
        assert streamed[key].dtype == files.base[key].dtype
        assert torch.equal(streamed[key], t), key


def test_non_streaming_method_and_dtype(files):
    out = files.dir / "m.safetensors"
    info = merge_files(files.base_path, files.tv_paths, WholeTensorMean(scaling=0.5), out, progress=False)
    merged = load_file(out)
    for key, b in files.base.items():
        expected = (b.float() + 0.5 * sum(tv[key] for tv in files.tvs) / 3).to(b.dtype)
        assert torch.equal(merged[key], expected), key
    assert info["streaming"] is False and info["n_tensors"] == len(files.base)


def test_output_keeps_base_order_and_metadata(files):
    out = files.dir / "m.safetensors"
    info = merge_files(files.base_path, files.tv_paths, get_method("ties", {"keep_fraction": 0.5}), out,
                       seed=5, metadata={"variant": "ties@keep_fraction=0.5"}, progress=False)  # fmt: skip
    specs, meta = read_header(out)
    assert list(specs) == list(read_header(files.base_path)[0])
    assert meta["method"] == "ties" and meta["format"] == "pt"
    assert json.loads(meta["hparams"]) == {"keep_fraction": 0.5, "scaling": 1.0, "matrices_only": False}
    assert json.loads(meta["experts"]) == ["expert-0", "expert-1", "expert-2"]
    assert meta["seed"] == "5" and meta["variant"] == "ties@keep_fraction=0.5"
    assert "torch" in json.loads(meta["provenance"])["versions"]
    assert info["experts"] == ["expert-0", "expert-1", "expert-2"] and info["wall_s"] >= 0
    with safe_open(out, "pt") as f:
        assert f.get_tensor("scalar").shape == () and f.get_tensor("empty").shape == (0, 3)


def test_bit_identical_reruns(files):
    method = get_method("dare_linear", {"drop_rate": 0.5})
    a, b, c = (files.dir / f"{x}.safetensors" for x in "abc")
    merge_files(files.base_path, files.tv_paths, method, a, seed=11, progress=False)
    merge_files(files.base_path, files.tv_paths, method, b, seed=11, progress=False)
    merge_files(files.base_path, files.tv_paths, method, c, seed=12, progress=False)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_delta_only(files):
    method = get_method("task_arithmetic", {"scaling": 0.5})
    out = files.dir / "delta.safetensors"
    merge_files(files.base_path, files.tv_paths, method, out, delta_only=True, progress=False)
    delta = load_file(out)
    for key in files.base:
        assert delta[key].dtype == torch.float32
        expected = sum((0.5 * tv[key] for tv in files.tvs), torch.zeros(files.base[key].shape))
        torch.testing.assert_close(delta[key], expected)
    assert json.loads(read_header(out)[1]["delta_only"]) is True


def test_writer_roundtrip_bf16_and_checks(tmp_path):
    specs = {"a": TensorSpec("BF16", (3, 2)), "z": TensorSpec("F32", (0,)), "b": TensorSpec("F32", ())}
    a = torch.randn(3, 2).bfloat16()
    with SafetensorsWriter(tmp_path / "w.safetensors", specs, {"k": "v"}) as w:
        w.write("a", a[:1])
        w.write("a", a[1:])
        w.write("b", torch.tensor(2.0))
    got = load_file(tmp_path / "w.safetensors")
    assert torch.equal(got["a"], a) and got["b"] == 2.0 and got["z"].shape == (0,)
    with pytest.raises(RuntimeError, match="expected 'a'"):
        with SafetensorsWriter(tmp_path / "x.safetensors", specs, None) as w:
            w.write("b", torch.tensor(1.0))
    with pytest.raises(RuntimeError, match="not \\(fully\\) written"):
        with SafetensorsWriter(tmp_path / "y.safetensors", specs, None) as w:
            w.write("a", a[:1])


# --- input checks and atomicity ----------------------------------------------------------------


def corrupt(files, edit, name="bad.safetensors"):
    tv = dict(files.tvs[1])
    edit(tv)
    path = files.dir / name
    save_file(tv, path)
    return [files.tv_paths[0], path]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda tv: tv.__setitem__(EMBED, torch.zeros(41, 8)), f"bad.safetensors.*{EMBED}.*shape \\[41, 8\\]"),
        (lambda tv: tv.pop("scalar"), "bad.safetensors.*missing.*scalar"),
        (lambda tv: tv.__setitem__("extra.weight", torch.zeros(2)), "bad.safetensors.*does not have.*extra.weight"),
        (lambda tv: tv.__setitem__("scalar", torch.tensor(1)), "bad.safetensors.*'scalar'.*I64.*floating"),
    ],
)
def test_mismatch_errors_name_file_and_tensor(files, edit, message):
    paths = corrupt(files, edit)
    out = files.dir / "out.safetensors"
    with pytest.raises(ValueError, match=message):
        merge_files(files.base_path, paths, "soup", out, progress=False)
    assert not out.exists() and leftovers(files.dir) == []


def test_tied_alias_is_ignored(files):
    paths = corrupt(files, lambda tv: tv.__setitem__("proj_out.weight", tv[EMBED].clone()))
    merge_files(files.base_path, paths, "soup", files.dir / "out.safetensors", progress=False)
    assert "proj_out.weight" not in load_file(files.dir / "out.safetensors")


def test_no_leftovers_on_error(files):
    out = files.dir / "out.safetensors"
    FailsOnSecondTensor.calls = 0
    with pytest.raises(RuntimeError, match="boom"):
        merge_files(files.base_path, files.tv_paths, FailsOnSecondTensor(), out, progress=False)
    assert not out.exists() and leftovers(files.dir) == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_result_is_an_error(files, bad):
    paths = corrupt(files, lambda tv: tv["model.encoder.layer_norm.weight"].__setitem__(0, bad))
    with pytest.raises(ValueError, match="non-finite.*model.encoder.layer_norm.weight"):
        merge_files(files.base_path, paths, "soup", files.dir / "out.safetensors", progress=False)
    assert leftovers(files.dir) == []


def test_in_memory_checks():
    base = make_base()
    tvs = make_tvs(base, 2)
    tvs[1][EMBED] = torch.zeros(3)
    with pytest.raises(ValueError, match=f"task vector 1.*{EMBED}.*shape"):
        merge_state_dicts(base, tvs, "soup")
    with pytest.raises(ValueError, match="no experts"):
        merge_state_dicts(base, [], "soup")


# --- CLI and full models -------------------------------------------------------------------------


def write_model_dir(path: Path, sd: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True)
    save_file(sd, path / "model.safetensors", metadata={"format": "pt"})
    (path / "config.json").write_text('{"model_type": "test"}')
    (path / "tokenizer.json").write_text("{}")
    (path / "import_info.json").write_text("{}")
    return path


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    merge_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_merge_model_dirs_equals_task_vector_merge(files, capsys):
    base_dir = write_model_dir(files.dir / "base", files.base)
    experts = [
        write_model_dir(files.dir / f"exp{i}", {k: (files.base[k].float() + tv[k]).half() for k in files.base})
        for i, tv in enumerate(files.tvs)
    ]
    out = files.dir / "merged"
    rc = run_cli(["merge", "--method", "ties", "--base", str(base_dir), "--experts", *map(str, experts),
                  "--out", str(out), "--set", "keep_fraction=0.5", "--set", "scaling=0.8", "--quiet"])  # fmt: skip
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "merge_info.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    info = json.loads((out / "merge_info.json").read_text())
    assert info["hparams"]["keep_fraction"] == 0.5 and info["experts"] == ["exp0", "exp1", "exp2"]
    # same as merging the (fp16-rounded) task vectors
    tvs = [{k: e[k].float() - files.base[k].float() for k in files.base}
           for e in (load_file(d / "model.safetensors") for d in experts)]  # fmt: skip
    expected = merge_state_dicts(files.base, tvs, get_method("ties", {"keep_fraction": 0.5, "scaling": 0.8}))
    merged = load_file(out / "model.safetensors")
    for k in files.base:
        assert torch.equal(merged[k], expected[k]), k


def test_cli_errors(files, capsys):
    base_dir = write_model_dir(files.dir / "base", files.base)
    bad = dict(files.base)
    bad[EMBED] = bad[EMBED].float()
    expert = write_model_dir(files.dir / "exp", bad)
    rc = run_cli(["merge", "--method", "soup", "--base", str(base_dir), "--experts", str(expert),
                  "--out", str(files.dir / "out"), "--quiet"])  # fmt: skip
    assert rc == 1 and f"{EMBED}' has dtype F32, the base has F16" in capsys.readouterr().err
    assert not (files.dir / "out").exists()
    rc = run_cli(["merge", "--method", "ties", "--base", str(base_dir), "--experts", str(base_dir),
                  "--out", str(files.dir / "out"), "--set", "keep_fraction=7"])  # fmt: skip
    assert rc == 2 and "'keep_fraction'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="one of the inputs"):
        merge_models(base_dir, [base_dir], "soup", base_dir, progress=False)


def test_parse_sets_and_list_methods(capsys):
    assert merge_cli.parse_sets(["a=0.5", "w=[1, 2]", "s=mean", "b=true", "n=null"]) == {
        "a": 0.5, "w": [1, 2], "s": "mean", "b": True, "n": None}  # fmt: skip
    with pytest.raises(ValueError, match="key=value"):
        merge_cli.parse_sets(["oops"])
    assert run_cli(["list-methods"]) == 0
    text = capsys.readouterr().out
    for name in ("soup", "model_stock", "karcher", "multislerp", "task_arithmetic", "ties", "dare_linear",
                 "dare_ties", "pcb", "sce"):  # fmt: skip
        assert f"\n{name}\n" in f"\n{text}"
    assert "keep_fraction=0.2" in text and "source:" in text


def test_merge_command_does_not_import_transformers():
    """``python -m speechmerge merge`` registers only the merging commands: no Whisper import."""
    code = ("import sys; from speechmerge.__main__ import build_parser; "
            "p = build_parser('merge'); p.parse_args(['list-methods']); "
            "print('transformers' in sys.modules, 'import-model' in build_parser().format_help())")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_whisper_roundtrip_loads_in_transformers(tmp_path):
    """A merged tiny Whisper directory loads with from_pretrained (tied proj_out handled)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = WhisperConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8,
                        max_source_positions=16, max_target_positions=16, pad_token_id=1, bos_token_id=2,
                        eos_token_id=2, decoder_start_token_id=3)  # fmt: skip
    torch.manual_seed(0)
    base = WhisperForConditionalGeneration(cfg)
    base.save_pretrained(tmp_path / "base")
    experts = []
    for i in range(2):
        m = WhisperForConditionalGeneration(cfg)
        m.load_state_dict(base.state_dict())
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01 * torch.randn_like(p))
        m.save_pretrained(tmp_path / f"e{i}")
        experts.append(m)
    rc = run_cli(["merge", "--method", "soup", "--base", str(tmp_path / "base"), "--experts",
                  str(tmp_path / "e0"), str(tmp_path / "e1"), "--out", str(tmp_path / "soup"), "--quiet"])  # fmt: skip
    assert rc == 0
    merged = WhisperForConditionalGeneration.from_pretrained(tmp_path / "soup")
    sd0, sd1 = experts[0].state_dict(), experts[1].state_dict()
    for k, v in merged.state_dict().items():
        torch.testing.assert_close(v, (sd0[k] + sd1[k]) / 2, atol=1e-6, rtol=1e-5)


# --- workflow script ---------------------------------------------------------------------------


def test_workflow_script(files):
    out = files.dir / "merged" / "ties.safetensors"
    info_path = files.dir / "merged" / "ties.json"
    snakemake = SimpleNamespace(
        input=SimpleNamespace(base=str(files.base_path), task_vectors=[str(p) for p in files.tv_paths]),
        output=SimpleNamespace(weights=str(out), info=str(info_path)),
        params=SimpleNamespace(
            spec={
                "method": "ties",
                "hparams": {"keep_fraction": 0.5},
                "seed": 2,
                "experts": ["expert-a", "expert-b", "expert-c"],
                "variant": "ties",
                "config_hash": "abc123",
            }
        ),  # fmt: skip
        log=[str(files.dir / "logs" / "merge.log")],
        threads=1,
    )
    import sys

    stderr = sys.stderr
    try:
        runpy.run_path(str(REPO / "workflow_scripts" / "merge.py"), init_globals={"snakemake": snakemake})
    finally:
        sys.stderr = stderr
    info = json.loads(info_path.read_text())
    assert info["method"] == "ties" and info["variant"] == "ties" and info["seed"] == 2
    assert info["experts"] == ["expert-a", "expert-b", "expert-c"]
    assert info["peak_rss_mb"] > 0 and info["provenance"]["config_hash"] == "abc123"
    meta = read_header(out)[1]
    assert json.loads(meta["experts"]) == ["expert-a", "expert-b", "expert-c"]
    expected = merge_state_dicts(files.base, files.tvs, get_method("ties", {"keep_fraction": 0.5}), seed=2)
    got = load_file(out)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
