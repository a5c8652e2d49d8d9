"""Decoding without transformers (speechmerge.models.inference) against transformers' Whisper:
the same features, encoder states, logits, greedy tokens and text, bit for bit, on a tiny random
Whisper; weights checked as load_whisper checks them; transformers never imported."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from speechmerge.evaluation import decode as D
from speechmerge.evaluation import greedy as G
from speechmerge.evaluation import metrics
from speechmerge.models import import_model, load_whisper
from speechmerge.models import inference as I


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("models") / "tiny"
    import_model("random:tiny", out, max_seconds=6)
    return out


@pytest.fixture(scope="module")
def pair(tiny):
    return load_whisper(tiny), I.load_for_decoding(tiny)


def waves(lengths=(0.7, 2.5, 6.0, 7.3), seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in lengths]


def test_mel_filters_and_features_equal_transformers(pair):
    (_, hp), (_, front) = pair
    assert torch.equal(torch.from_numpy(hp.feature_extractor.mel_filters).to(torch.float32), front.mel_filters)
    n_frames = 600
    ref = D.log_mel(hp, waves(), n_frames)
    got = D.log_mel(front, waves(), n_frames)
    assert got.shape == ref.shape == (4, hp.feature_extractor.feature_size, n_frames)
    assert torch.equal(got, ref)


def test_encoder_and_decoder_bit_identical(pair):
    (hm, hp), (nm, front) = pair
    feats = D.log_mel(front, waves(), D.encoder_frames(hm))
    with torch.inference_mode():
        ref = hm.get_encoder()(feats).last_hidden_state
        got = nm.get_encoder()(feats).last_hidden_state
        assert torch.equal(got, ref)
        prompts = torch.tensor([G.prompt_ids(hm.generation_config, "de", "transcribe")] * 4)
        h_ref = hm.get_decoder()(input_ids=prompts, encoder_hidden_states=ref).last_hidden_state
        h_got = nm.get_decoder()(input_ids=prompts, encoder_hidden_states=got, past_key_values=nm.new_cache())
        assert torch.equal(h_got.last_hidden_state, h_ref)
        assert torch.equal(nm.proj_out(h_got.last_hidden_state), hm.proj_out(h_ref))


def test_greedy_tokens_and_text_equal_transformers(pair):
    (hm, hp), (nm, front) = pair
    langs = ["de", "es", "de", "es"]
    tasks = [("transcribe", "translate")] * 4
    ref = D.decode_tasks(hm, hp, waves(), langs, tasks, batch_size=3, max_new_tokens=12, progress=False)
    got = D.decode_tasks(nm, front, waves(), langs, tasks, batch_size=3, max_new_tokens=12, progress=False)
    assert got.by_task == ref.by_task
    assert got.hit_bound == ref.hit_bound and got.decoder_steps == ref.decoder_steps


def test_batch_decode_equals_tokenizer(pair):
    (_, hp), (_, front) = pair
    tok = hp.tokenizer
    ids = tok(" Hallo Welt, wie geht's? 1.5 kg", add_special_tokens=False).input_ids
    special = [tok.convert_tokens_to_ids(t) for t in ("<|startoftranscript|>", "<|de|>", "<|notimestamps|>")]
    stamp = tok.convert_tokens_to_ids("<|0.00|>")
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    rows = [special + ids + [eot], ids + [stamp] + ids[:2], [eot, eot], ids[::-1]]
    width = max(map(len, rows))
    seqs = torch.tensor([r + [eot] * (width - len(r)) for r in rows])
    assert front.batch_decode(seqs) == hp.batch_decode(seqs, skip_special_tokens=True)


def test_replacement_weights_and_their_errors(tiny, tmp_path, pair):
    (hm, _), _ = pair
    sd = {k: v.clone() for k, v in hm.state_dict().items() if k != "proj_out.weight"}
    sd["model.decoder.layer_norm.bias"] += 1.0
    good = tmp_path / "w.safetensors"
    save_file(sd, str(good))
    nm, _ = I.load_for_decoding(tiny, good)
    assert torch.equal(nm.model.decoder.layer_norm.bias, sd["model.decoder.layer_norm.bias"])
    assert nm.proj_out.weight.data_ptr() == nm.model.decoder.embed_tokens.weight.data_ptr()

    missing = dict(sd)
    del missing["model.encoder.conv1.weight"]
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match=r"missing.safetensors: missing tensor model\.encoder\.conv1\.weight"):
        I.load_for_decoding(tiny, tmp_path / "missing.safetensors")
    bad = dict(sd)
    bad["model.encoder.layers.0.fc1.bias"] = bad["model.encoder.layers.0.fc1.bias"].clone()
    bad["model.encoder.layers.0.fc1.bias"][0] = float("nan")
    save_file(bad, str(tmp_path / "nan.safetensors"))
    with pytest.raises(ValueError, match=r"nan.safetensors: tensor model\.encoder\.layers\.0\.fc1\.bias contains NaN"):
        I.load_for_decoding(tiny, tmp_path / "nan.safetensors")


def test_config_errors_name_the_file(tiny, tmp_path):
    cfg = (tiny / "config.json").read_text().replace('"activation_function": "gelu"', '"activation_function": "relu"')
    assert "relu" in cfg
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(cfg)
    with pytest.raises(ValueError, match=r"config\.json: activation_function 'relu'"):
        I.load_for_decoding(d)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        I.load_for_decoding(tmp_path)


def test_load_decoder_picks_transformers_for_beam_search_only(tiny):
    assert isinstance(I.load_decoder(tiny)[0], I.WhisperDecoderModel)
    assert not isinstance(I.load_decoder(tiny, beam_size=2)[0], I.WhisperDecoderModel)
    bf16, _ = I.load_decoder(tiny, dtype=torch.bfloat16)
    assert isinstance(bf16, I.WhisperDecoderModel)
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    assert bf16.proj_out.weight is bf16.model.decoder.embed_tokens.weight


def test_bfloat16_greedy_tokens_equal_transformers_in_bfloat16(tiny):
    hm, hp = load_whisper(tiny, dtype=torch.bfloat16)
    nm, front = I.load_decoder(tiny, dtype=torch.bfloat16)
    langs, tasks = ["de", "es", "de", "es"], [("transcribe", "translate")] * 4
    ref = D.decode_tasks(hm, hp, waves(), langs, tasks, batch_size=3, max_new_tokens=12, progress=False)
    got = D.decode_tasks(nm, front, waves(), langs, tasks, batch_size=3, max_new_tokens=12, progress=False)
    assert got.by_task == ref.by_task


def test_decoding_job_never_imports_transformers(tiny):
    code = (
        "import sys\n"
        "from speechmerge.models.inference import load_decoder\n"
        "from speechmerge.evaluation import metrics\n"
        f"load_decoder({str(tiny)!r})\n"
        "metrics.normalizer_for('en')('Hello, World!')\n"
        "metrics.normalizer_for('de')('Hallo, Welt!')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_normalisers_loaded_by_file_equal_transformers():
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    metrics._whisper_normalizers.cache_clear()
    basic, english = metrics._whisper_normalizers()  # transformers is loaded here: the package's own classes
    assert basic is BasicTextNormalizer and english is EnglishTextNormalizer
    code = (
        "from speechmerge.evaluation import metrics\n"
        "b, e = metrics._whisper_normalizers()\n"
        "print(b(remove_diacritics=False)('Ça, c’est l’été!'))\n"
        "print(e({})('Mr. Smith has $20 and 1.5 kg.'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.splitlines() == [
        BasicTextNormalizer(remove_diacritics=False)("Ça, c’est l’été!"),
        EnglishTextNormalizer({})("Mr. Smith has $20 and 1.5 kg."),
    ]
