"""Decoding on a tiny random Whisper: JSONL format, prompts per utterance, bounds, errors."""

import json
import runpy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from speechmerge.data.audio import encode_flac
from speechmerge.data.io import write_split
from speechmerge.evaluation import decode as D
from speechmerge.evaluation import evaluate, evaluate_testsets, read_hypotheses

models = pytest.importorskip("speechmerge.models", reason="model loader (speechmerge.models) not available")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("models") / "tiny"
    models.import_model("random:tiny", out, max_seconds=6)
    return out


def make_split(path, langs=("de", "es", "de", "es", "de"), durations=(1.0, 2.5, 1.5, 3.0, 7.0)):
    rng = np.random.default_rng(0)
    recs = []
    for i, (lang, dur) in enumerate(zip(langs, durations)):
        w = (0.05 * rng.standard_normal(int(16000 * dur))).astype(np.float32)
        recs.append(dict(id=f"utt{i}", audio=encode_flac(w), language=lang, domain="clean",
                         transcript=f"satz nummer {i}", translation=f"sentence number {i}", voice="m1",
                         split="test", duration=dur))
    write_split(recs, path)
    return recs


class Spy:
    """Wrap model.generate and record what each call asked for."""

    def __init__(self, model):
        self.calls, self._orig = [], model.generate

    def __call__(self, feats=None, **kw):
        states = kw["encoder_outputs"].last_hidden_state
        self.calls.append({"batch": states.shape[0], "positions": states.shape[1], **kw})
        return self._orig(feats, **kw)


def test_evaluate_writes_wellformed_records(tiny, tmp_path):
    make_split(tmp_path / "test.parquet")
    recs, scores = evaluate(tiny, None, tmp_path / "test.parquet", task="translate", batch_size=2,
                            max_new_tokens=6, model_name="zeroshot", experiment="exp", subset="mix",
                            testset="mix-translate", n_boot=20, progress=False)
    assert [r["id"] for r in recs] == [f"utt{i}" for i in range(5)]  # input order kept
    for i, r in enumerate(recs):
        assert set(D.HYP_FIELDS) <= set(r)
        assert r["reference"] == f"sentence number {i}" and r["task"] == "translate" and r["model"] == "zeroshot"
        assert isinstance(r["hypothesis"], str)
    assert set(scores["metrics"]) == {"bleu", "chrf"} and scores["bleu_signature"].startswith("nrefs:1")
    assert scores["n"] == 5 and scores["testset"] == "mix-translate" and scores["experiment"] == "exp"
    assert scores["decoding"]["n_truncated"] == 1  # the 7 s utterance exceeds the 6 s context
    assert "versions" in scores["provenance"]
    D.write_hypotheses(recs, tmp_path / "h.jsonl")
    lines = (tmp_path / "h.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[0])["id"] == "utt0"
    assert read_hypotheses(tmp_path / "h.jsonl", expect_model="zeroshot")[3]["reference"] == "sentence number 3"


def test_prompts_sorting_and_bounds(tiny, tmp_path):
    recs = make_split(tmp_path / "t.parquet")
    model, processor = models.load_whisper(tiny)
    spy = Spy(model)
    model.generate = spy
    waves = [np.zeros(int(16000 * r["duration"]), np.float32) + 0.01 for r in recs]
    langs = [r["language"] for r in recs]
    durs = [r["duration"] for r in recs]
    res = D.decode(model, processor, waves, langs, task="transcribe", batch_size=2, max_new_tokens=40,
                   durations=durs, max_tokens_per_second=4, token_margin=2, progress=False)
    assert len(res.hypotheses) == 5
    # longest first: durations 7.0, 3.0 | 2.5, 1.5 | 1.0 -> languages de, es | es, de | de
    assert [c["language"] for c in spy.calls] == [["de", "es"], ["es", "de"], ["de"]]
    assert all(c["task"] == "transcribe" and c["positions"] == 300 for c in spy.calls)
    # bound = min(40, ceil(4 * longest) + 2): 30, 12, 6
    assert [c["max_new_tokens"] for c in spy.calls] == [30, 12, 6]
    spy.calls.clear()
    D.decode(model, processor, waves, langs, task="translate", batch_size=2, max_new_tokens=40,
             durations=durs, sort_by_length=False, progress=False)
    assert [c["language"] for c in spy.calls] == [["de", "es"], ["de", "es"], ["de"]]
    assert [c["max_new_tokens"] for c in spy.calls] == [40, 40, 40]


def test_missing_language_prompt(tiny):
    model, processor = models.load_whisper(tiny)
    with pytest.raises(ValueError, match=r"dev-xx.*\['tlh'\]"):
        D.decode(model, processor, [np.zeros(16000, np.float32)], ["tlh"], task="transcribe",
                 testset="dev-xx", progress=False)
    with pytest.raises(ValueError, match="unknown task"):
        D.decode(model, processor, [np.zeros(16000, np.float32)], ["de"], task="summarise", progress=False)


def test_language_must_match_dataset(tiny, tmp_path):
    make_split(tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"language is 'fr'.*\['de', 'es'\]"):
        evaluate(tiny, None, tmp_path / "t.parquet", task="transcribe", language="fr", model_name="m",
                 n_boot=0, progress=False)


def test_evaluate_script_several_testsets(tiny, tmp_path):
    make_split(tmp_path / "de.parquet", langs=("de",) * 3, durations=(1.0, 2.0, 1.5))
    out = tmp_path / "eval"
    snake = SimpleNamespace(
        input=SimpleNamespace(model=str(tiny / "config.json"), weights=str(tiny / "model.safetensors"),
                              testsets=[str(tmp_path / "de.parquet")] * 2),
        output=SimpleNamespace(hyps=str(out / "m.jsonl"), scores=str(out / "m.json")),
        params=SimpleNamespace(spec={
            "experiment": "multilingual", "model": "zeroshot", "batch_size": 2, "beam_size": 1,
            "max_new_tokens": 5, "bootstrap": 20, "config_hash": "abc",
            "testsets": [{"testset": "de-transcribe", "subset": "de", "task": "transcribe", "language": "de"},
                         {"testset": "de-translate", "subset": "de", "task": "translate", "language": "de"}]}),
        log=[str(tmp_path / "log.txt")], threads=1,
    )
    runpy.run_path("workflow_scripts/evaluate.py", init_globals={"snakemake": snake})
    scores = json.loads((out / "m.json").read_text())
    assert [r["testset"] for r in scores["results"]] == ["de-transcribe", "de-translate"]
    assert set(scores["results"][0]["metrics"]) == {"wer", "cer"}
    assert set(scores["results"][1]["metrics"]) == {"bleu", "chrf"}
    assert scores["provenance"]["config_hash"] == "abc"
    recs = read_hypotheses(out / "m.jsonl", expect_model="zeroshot")
    assert len(recs) == 6 and {r["testset"] for r in recs} == {"de-transcribe", "de-translate"}
    assert {r["reference"] for r in recs if r["task"] == "translate"} == {f"sentence number {i}" for i in range(3)}


def test_evaluate_testsets_requires_keys(tiny, tmp_path):
    with pytest.raises(KeyError, match="lacks 'path'"):
        evaluate_testsets(tiny, None, [{"testset": "x", "task": "transcribe"}], model_name="m", progress=False)


def test_two_tasks_share_one_encoder_pass(tiny, tmp_path):
    """decode_tasks encodes each utterance once and gives the hypotheses of separate decodes."""
    recs = make_split(tmp_path / "t.parquet")
    model, processor = models.load_whisper(tiny)
    waves = [np.full(int(16000 * r["duration"]), 0.01 * (i + 1), np.float32) for i, r in enumerate(recs)]
    langs = [r["language"] for r in recs]
    kw = dict(batch_size=2, max_new_tokens=8, progress=False)
    alone = {t: D.decode(model, processor, waves, langs, task=t, **kw).hypotheses for t in D.TASKS}
    encoded = []
    encoder = model.get_encoder()
    hook = encoder.register_forward_hook(lambda m, args, out: encoded.append(args[0].shape[0]))
    # utterance 4 only for translation
    tasks = [("transcribe", "translate")] * 4 + [("translate",)]
    res = D.decode_tasks(model, processor, waves, langs, tasks, **kw)
    hook.remove()
    assert sum(encoded) == 5 and res.encoder_passes == 5 and res.n_hypotheses == 9
    assert res.by_task["translate"] == alone["translate"]
    assert res.by_task["transcribe"][:4] == alone["transcribe"][:4] and res.by_task["transcribe"][4] is None
    with pytest.raises(ValueError, match="use by_task"):
        res.hypotheses


def test_evaluate_testsets_equals_one_by_one(tiny, tmp_path):
    make_split(tmp_path / "de.parquet", langs=("de",) * 3, durations=(1.0, 2.0, 1.5))
    make_split(tmp_path / "mix.parquet")
    kw = dict(batch_size=16, max_new_tokens=6, n_boot=0, progress=False)
    specs = [{"path": tmp_path / "de.parquet", "testset": "de-transcribe", "task": "transcribe", "language": "de"},
             {"path": tmp_path / "de.parquet", "testset": "de-translate", "task": "translate", "language": "de"},
             {"path": tmp_path / "mix.parquet", "testset": "mix-translate", "task": "translate"}]
    recs, scores = evaluate_testsets(tiny, None, specs, model_name="m", **kw)
    assert [r["testset"] for r in scores["results"]] == ["de-transcribe", "de-translate", "mix-translate"]
    shared = scores["results"][0]["decoding"]["shared"]
    assert shared["utterances"] == 8 and shared["hypotheses"] == 11
    assert [r["decoding"]["n_truncated"] for r in scores["results"]] == [0, 0, 1]
    for spec, res in zip(specs, scores["results"]):
        one, sc = evaluate(tiny, None, spec["path"], task=spec["task"], language=spec.get("language"),
                           testset=spec["testset"], model_name="m", **kw)
        assert [r["hypothesis"] for r in recs if r["testset"] == spec["testset"]] == [r["hypothesis"] for r in one]
        assert sc["metrics"] == res["metrics"]


def test_empty_reference_fails_before_decoding(tiny, tmp_path, monkeypatch):
    recs = make_split(tmp_path / "t.parquet", langs=("de",) * 2, durations=(1.0, 1.2))
    recs[1]["translation"] = " "
    write_split(recs, tmp_path / "t.parquet")
    calls = []
    monkeypatch.setattr(D, "decode_tasks", lambda *a, **k: calls.append(1))
    spec = {"path": tmp_path / "t.parquet", "testset": "de-translate", "task": "translate"}
    with pytest.raises(ValueError, match=r"t\.parquet: empty translation.*\['utt1'\]"):
        evaluate_testsets(tiny, None, [spec], model_name="m", n_boot=0, progress=False)
    assert calls == []


def test_beam_search_shares_the_encoder_too(tiny):
    model, processor = models.load_whisper(tiny)
    waves = [np.full(16000 * (1 + i), 0.02 * (i + 1), np.float32) for i in range(3)]
    res = D.decode_tasks(model, processor, waves, ["de"] * 3, [D.TASKS] * 3, beam_size=2, max_new_tokens=5,
                         progress=False)
    assert res.encoder_passes == 3 and all(len(h) == 3 and None not in h for h in res.by_task.values())
