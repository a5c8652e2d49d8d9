"""Decoding on a tiny random Whisper: JSONL format, prompts per utterance, bounds, errors."""

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from speechmerge.data.audio import encode_flac
from speechmerge.data.io import write_split
from speechmerge.evaluation import decode as D
from speechmerge.evaluation import evaluate_testsets, read_hypotheses
from speechmerge.evaluation import greedy as G


def evaluate(model_dir, weights, path, *, task, language=None, testset=None, subset=None, **kw):
    """One test set through ``evaluate_testsets``: (records, its scores record with provenance)."""
    spec = {"path": path, "testset": testset or Path(path).stem, "task": task, "language": language, "subset": subset}
    records, doc = evaluate_testsets(model_dir, weights, [spec], **kw)
    return records, {**doc["results"][0], "provenance": doc["provenance"]}


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
        recs.append(
            dict(
                id=f"utt{i}",
                audio=encode_flac(w),
                language=lang,
                domain="clean",
                transcript=f"satz nummer {i}",
                translation=f"sentence number {i}",
                voice="m1",
                split="test",
                duration=dur,
            )
        )
    write_split(recs, path)
    return recs


class Spy:
    """Wrap greedy.greedy_generate and record what each call asked for."""

    def __init__(self, model):
        self.calls, self._orig = [], G.greedy_generate
        self._lang = {v: k.strip("<|>") for k, v in model.generation_config.lang_to_id.items()}
        self._task = {v: k for k, v in model.generation_config.task_to_id.items()}

    def __call__(self, model, states, prompts, *, max_new_tokens, **kw):
        self.calls.append(
            {
                "batch": states.shape[0],
                "positions": states.shape[1],
                "max_new_tokens": max_new_tokens,
                "language": [self._lang[int(p[1])] for p in prompts],
                "task": [self._task[int(p[2])] for p in prompts],
            }
        )
        return self._orig(model, states, prompts, max_new_tokens=max_new_tokens, **kw)


def test_evaluate_writes_wellformed_records(tiny, tmp_path):
    make_split(tmp_path / "test.parquet")
    recs, scores = evaluate(
        tiny,
        None,
        tmp_path / "test.parquet",
        task="translate",
        batch_size=2,
        max_new_tokens=6,
        model_name="zeroshot",
        experiment="exp",
        subset="mix",
        testset="mix-translate",
        n_boot=20,
        progress=False,
    )
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


def test_prompts_sorting_and_bounds(tiny, tmp_path, monkeypatch):
    recs = make_split(tmp_path / "t.parquet")
    model, processor = models.load_whisper(tiny)
    spy = Spy(model)
    monkeypatch.setattr(G, "greedy_generate", spy)
    waves = [np.zeros(int(16000 * r["duration"]), np.float32) + 0.01 for r in recs]
    langs = [r["language"] for r in recs]
    durs = [r["duration"] for r in recs]
    res = D.decode(
        model,
        processor,
        waves,
        langs,
        task="transcribe",
        batch_size=2,
        max_new_tokens=40,
        durations=durs,
        max_tokens_per_second=4,
        token_margin=2,
        progress=False,
    )
    assert len(res.hypotheses) == 5
    # longest first: durations 7.0, 3.0 | 2.5, 1.5 | 1.0 -> languages de, es | es, de | de
    assert [c["language"] for c in spy.calls] == [["de", "es"], ["es", "de"], ["de"]]
    assert all(set(c["task"]) == {"transcribe"} and c["positions"] == 300 for c in spy.calls)
    # bound = min(40, ceil(4 * longest) + 2): 30, 12, 6
    assert [c["max_new_tokens"] for c in spy.calls] == [30, 12, 6]
    spy.calls.clear()
    D.decode(
        model,
        processor,
        waves,
        langs,
        task="translate",
        batch_size=2,
        max_new_tokens=40,
        durations=durs,
        sort_by_length=False,
        progress=False,
    )
    assert [c["language"] for c in spy.calls] == [["de", "es"], ["de", "es"], ["de"]]
    assert [c["max_new_tokens"] for c in spy.calls] == [40, 40, 40]


def test_missing_language_prompt(tiny):
    model, processor = models.load_whisper(tiny)
    with pytest.raises(ValueError, match=r"dev-xx.*\['tlh'\]"):
        D.decode(
            model,
            processor,
            [np.zeros(16000, np.float32)],
            ["tlh"],
            task="transcribe",
            testset="dev-xx",
            progress=False,
        )
    with pytest.raises(ValueError, match="unknown task"):
        D.decode(model, processor, [np.zeros(16000, np.float32)], ["de"], task="summarise", progress=False)


def test_language_must_match_dataset(tiny, tmp_path):
    make_split(tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"language is 'fr'.*\['de', 'es'\]"):
        evaluate(
            tiny,
            None,
            tmp_path / "t.parquet",
            task="transcribe",
            language="fr",
            model_name="m",
            n_boot=0,
            progress=False,
        )


def test_evaluate_script_several_testsets(tiny, tmp_path):
    make_split(tmp_path / "de.parquet", langs=("de",) * 3, durations=(1.0, 2.0, 1.5))
    out = tmp_path / "eval"
    snake = SimpleNamespace(
        input=SimpleNamespace(
            model=str(tiny / "config.json"),
            weights=str(tiny / "model.safetensors"),
            testsets=[str(tmp_path / "de.parquet")] * 2,
        ),
        output=SimpleNamespace(hyps=str(out / "m.jsonl"), scores=str(out / "m.json")),
        params=SimpleNamespace(
            spec={
                "experiment": "multilingual",
                "model": "zeroshot",
                "batch_size": 2,
                "beam_size": 1,
                "max_new_tokens": 5,
                "bootstrap": 20,
                "config_hash": "abc",
                "testsets": [
                    {"testset": "de-transcribe", "subset": "de", "task": "transcribe", "language": "de"},
                    {"testset": "de-translate", "subset": "de", "task": "translate", "language": "de"},
                ],
            }
        ),
        log=[str(tmp_path / "log.txt")],
        threads=1,
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
    specs = [
        {"path": tmp_path / "de.parquet", "testset": "de-transcribe", "task": "transcribe", "language": "de"},
        {"path": tmp_path / "de.parquet", "testset": "de-translate", "task": "translate", "language": "de"},
        {"path": tmp_path / "mix.parquet", "testset": "mix-translate", "task": "translate"},
    ]
    recs, scores = evaluate_testsets(tiny, None, specs, model_name="m", **kw)
    assert [r["testset"] for r in scores["results"]] == ["de-transcribe", "de-translate", "mix-translate"]
    shared = scores["results"][0]["decoding"]["shared"]
    assert shared["utterances"] == 8 and shared["hypotheses"] == 11
    assert [r["decoding"]["n_truncated"] for r in scores["results"]] == [0, 0, 1]
    for spec, res in zip(specs, scores["results"]):
        one, sc = evaluate(
            tiny,
            None,
            spec["path"],
            task=spec["task"],
            language=spec.get("language"),
            testset=spec["testset"],
            model_name="m",
            **kw,
        )
        assert [r["hypothesis"] for r in recs if r["testset"] == spec["testset"]] == [r["hypothesis"] for r in one]
        assert sc["metrics"] == res["metrics"]


def test_a_file_named_by_two_testsets_is_read_once(tiny, tmp_path, monkeypatch):
    from speechmerge.data import io

    make_split(tmp_path / "de.parquet", langs=("de",) * 2, durations=(1.0, 1.5))
    reads, orig = [], io.iter_examples
    monkeypatch.setattr(io, "iter_examples", lambda path, **kw: reads.append(str(path)) or orig(path, **kw))
    specs = [{"path": tmp_path / "de.parquet", "testset": f"de-{t}", "task": t, "language": "de"} for t in D.TASKS]
    recs, _ = evaluate_testsets(tiny, None, specs, model_name="m", max_new_tokens=3, n_boot=0, progress=False)
    assert reads == [str(tmp_path / "de.parquet")] and len(recs) == 4


def test_evaluation_decodes_from_the_spool_as_from_memory(tiny, tmp_path, monkeypatch):
    """Test sets are read a row group at a time into a spool on disk; decoding reads each batch
    back from it and gives the hypotheses that decoding the waveforms held in memory gives."""
    from speechmerge.data.io import read_examples
    from speechmerge.data.spool import SpooledWaves

    make_split(tmp_path / "de.parquet", langs=("de",) * 3, durations=(1.0, 1.5, 0.7))
    given = []
    orig = D.decode_tasks
    monkeypatch.setattr(
        D, "decode_tasks", lambda m, p, waves, *a, **k: given.append(waves) or orig(m, p, waves, *a, **k)
    )
    spec = {"path": tmp_path / "de.parquet", "testset": "de-transcribe", "task": "transcribe", "language": "de"}
    recs, _ = evaluate_testsets(tiny, None, [spec], model_name="m", max_new_tokens=4, n_boot=0, progress=False)
    assert isinstance(given[0], SpooledWaves) and given[0].lengths == [16000, 24000, 11200]
    model, processor = models.load_whisper(tiny)
    ex = read_examples(tmp_path / "de.parquet")
    direct = orig(model, processor, [e.audio for e in ex], ["de"] * 3, [("transcribe",)] * 3, max_new_tokens=4,
                  progress=False)  # fmt: skip
    assert [r["hypothesis"] for r in recs] == direct.by_task["transcribe"]


def test_wave_spool_reads_back_what_it_stored(tmp_path):
    from speechmerge.data.spool import WaveSpool

    waves = [np.arange(n, dtype=np.float32) / 7 for n in (5, 0, 3)]
    with WaveSpool.temporary(dir=tmp_path) as spool:
        assert [spool.append(w) for w in waves] == [0, 1, 2]
        for got, want in zip(spool.take([2, 0, 1]), [waves[2], waves[0], waves[1]]):
            np.testing.assert_array_equal(got, want)
        assert spool.take([2, 0]).lengths == [3, 5]
        with pytest.raises(IndexError, match="waveform 3 of 3"):
            spool[3]
    assert list(tmp_path.iterdir()) == []  # the spool's folder is removed


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
    res = D.decode_tasks(
        model, processor, waves, ["de"] * 3, [D.TASKS] * 3, beam_size=2, max_new_tokens=5, progress=False
    )
    assert res.encoder_passes == 3 and all(len(h) == 3 and None not in h for h in res.by_task.values())


def _encoded(model, processor, n=6, seed=1):
    rng = np.random.default_rng(seed)
    waves = [(0.1 * rng.standard_normal(8000 * (1 + i))).astype(np.float32) for i in range(n)]
    with torch.inference_mode():
        return model.get_encoder()(D.log_mel(processor, waves, D.encoder_frames(model))).last_hidden_state


def _generate_ref(model, states, langs, task, bound):
    from transformers.modeling_outputs import BaseModelOutput

    with torch.inference_mode():
        return model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=states),
            language=langs,
            task=task,
            max_new_tokens=bound,
            do_sample=False,
        )


@pytest.mark.parametrize("task", D.TASKS)
def test_greedy_loop_gives_generate_tokens(tiny, task):
    """greedy_generate == model.generate(encoder_outputs=...) token for token, bound hit or not."""
    model, processor = models.load_whisper(tiny)
    states = _encoded(model, processor, n=4)
    langs = ["de", "es", "de", "fr"]
    prompts = torch.tensor([G.prompt_ids(model.generation_config, l, task) for l in langs])
    for bound in (3, 40):
        ref = _generate_ref(model, states, langs, task, bound)
        for compact in (None, 0.75):
            got = G.greedy_generate(model, states, prompts, max_new_tokens=bound, compact=compact)
            assert torch.equal(got, ref), (bound, compact, got, ref)


END_AT = [2, 5, 5, 9, 14, None, 3, 7]  # the step at which each of 8 rows produces end-of-text


@pytest.fixture
def scheduled(tiny):
    """The tiny model made to end row i at generated step END_AT[i] (the random model alone
    rarely ends a hypothesis). Rows are recognised by their encoder states, which follow the
    rows through any reordering, and steps are counted per decoder call; end-of-text gets a
    large logit at that row's step."""
    model, processor = models.load_whisper(tiny)
    states = _encoded(model, processor, n=len(END_AT), seed=3)
    end_of = {float(states[i, 0, 0]): e for i, e in enumerate(END_AT)}
    eos = model.generation_config.eos_token_id
    seen = {}

    def before_decoder(module, args, kw):
        seen["step"] = 0 if kw["input_ids"].shape[1] > 1 else seen["step"] + 1
        seen["rows"] = [end_of[float(x)] for x in kw["encoder_hidden_states"][:, 0, 0]]

    class Scheduled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.out_features = inner, inner.out_features

        def forward(self, hidden):
            logits = self.inner(hidden)
            hit = torch.tensor([e == seen["step"] for e in seen["rows"]], dtype=logits.dtype)
            logits[..., eos] += 1e4 * hit.view(-1, *[1] * (logits.dim() - 2))
            return logits

    model.get_decoder().register_forward_pre_hook(before_decoder, with_kwargs=True)
    model.proj_out = Scheduled(model.proj_out)
    return model, states


def test_dropping_ended_rows_changes_no_token(scheduled):
    model, states = scheduled
    eos = model.generation_config.eos_token_id
    langs = ["de", "es", "fr", "it"] * 2
    prompts = torch.tensor([G.prompt_ids(model.generation_config, l, "transcribe") for l in langs])
    for bound in (10, 30):
        ref = _generate_ref(model, states, langs, "transcribe", bound)
        ends = [int((r == eos).nonzero()[0]) if (r == eos).any() else None for r in ref]
        assert ends == [e if e is not None and e < bound else None for e in END_AT]  # the harness works
        for compact in (None, 0.75, 0.5, 0.01):
            # sync_every: the host checks for ended rows every token (the CPU) or every 8 (a GPU)
            for sync_every in (1, 3, 8):
                got = G.greedy_generate(
                    model, states, prompts, max_new_tokens=bound, compact=compact, sync_every=sync_every
                )
                assert torch.equal(got, ref), (bound, compact, sync_every, got, ref)
    # every row ended: the last row's end step is dropped, as generate does
    for sync_every in (1, 3, 8):
        ended = G.greedy_generate(
            model, states[[0, 1, 6]], prompts[[0, 1, 6]], max_new_tokens=30, sync_every=sync_every
        )
        assert ended.shape[1] == 5 and torch.equal(
            ended, _generate_ref(model, states[[0, 1, 6]], ["de", "es", "fr"], "transcribe", 30)
        )


def test_greedy_rows_shrink_as_they_end(scheduled):
    """With compaction, the steps after rows ended run on fewer rows (never more)."""
    model, states = scheduled
    prompts = torch.tensor([G.prompt_ids(model.generation_config, "de", "transcribe")] * len(END_AT))
    batch = []
    hook = model.get_decoder().register_forward_pre_hook(
        lambda m, args, kw: batch.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        G.greedy_generate(model, states, prompts, max_new_tokens=20, compact=0.75)
        shrinking, batch[:] = list(batch), []
        G.greedy_generate(model, states, prompts, max_new_tokens=20, compact=None)
    finally:
        hook.remove()
    assert batch == [8] * 20
    # rows end at steps 2, 3, 5, 5, 7, 9, 14 (one never); compaction once running <= 3/4 of the batch:
    # after step 3: 6 of 8 -> 6 rows; step 5: 4 of 6 -> 4; step 7: 3 of 4 -> 3; step 9: 2 of 3 -> 2;
    # step 14: 1 of 2 -> 1. (After step 2, 7 of 8 > 6 runs on.)
    assert shrinking == [8] * 4 + [6] * 2 + [4] * 2 + [3] * 2 + [2] * 5 + [1] * 5
    with pytest.raises(ValueError, match="compact"):
        G.greedy_generate(model, states, prompts, max_new_tokens=3, compact=1.5)
