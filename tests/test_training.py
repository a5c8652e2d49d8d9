"""Fine-tuning: prompts and label masking, data order, the training loop, methods, outputs.

Uses the tiny random Whisper (real multilingual tokenizer, 2 s context) and a handful of
synthetic utterances (sine tones), so every run takes a second or two.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from speechmerge.data.audio import encode_flac
from speechmerge.data.io import read_examples, write_split
from speechmerge.training import TrainingDiverged, batching, train
from speechmerge.training.objective import lr_factor
from speechmerge.training.peft import adalora_schedule, build_method

# Whisper multilingual special token ids (the real tokenizer).
SOT, EOT, DE, EN, TRANSCRIBE, TRANSLATE, NOTS = 50258, 50257, 50261, 50259, 50359, 50358, 50363

UTTERANCES = [  # (id, language, transcript, translation, tone Hz, seconds)
    ("u0", "de", "guten morgen", "good morning", 220.0, 1.2),
    ("u1", "de", "danke schön", "thank you", 330.0, 1.5),
    ("u2", "en", "hello world", "hello world", 440.0, 1.0),
    ("u3", "de", "wie geht es dir", "how are you", 550.0, 1.8),
]
DEV = [("d0", "de", "guten abend", "good evening", 260.0, 1.3), ("d1", "en", "good night", "good night", 480.0, 1.1)]


def _record(uid, lang, text, trans, hz, seconds, split):
    rng = np.random.default_rng(abs(hash(uid)) % 2**32)
    t = np.arange(int(seconds * 16000)) / 16000
    wave = 0.4 * np.sin(2 * np.pi * hz * t) * np.hanning(t.size) + 0.01 * rng.standard_normal(t.size)
    return {
        "id": uid,
        "audio": encode_flac(wave.astype(np.float32)),
        "language": lang,
        "domain": "clean",
        "transcript": text,
        "translation": trans,
        "voice": "synthetic",
        "split": split,
        "duration": float(seconds),
    }


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from speechmerge.models import import_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    import_model("random:tiny", out, max_seconds=2, progress=False)
    return out


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_split([_record(*u, "train") for u in UTTERANCES], d / "train.parquet")
    write_split([_record(*u, "dev") for u in DEV], d / "dev.parquet")
    return d / "train.parquet", d / "dev.parquet"


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import WhisperProcessor

    return WhisperProcessor.from_pretrained(tiny_model).tokenizer


def make_spec(**kw):
    spec = dict(
        experiment="test",
        job="j",
        method="full",
        tasks=["transcribe"],
        steps=4,
        batch_size=2,
        grad_accum=1,
        lr=1e-3,
        warmup_steps=1,
        weight_decay=0.0,
        max_grad_norm=1.0,
        eval_every=2,
        checkpoint_every=0,
        seed=0,
        peft={},
        checkpoint_dir=None,
    )
    spec.update(kw)
    return spec


def run(tiny_model, splits, out, **kw):
    train_p, dev_p = splits
    return train(make_spec(**kw), tiny_model, [train_p], [dev_p], out, threads=1, progress=False)


# --- prompts, labels, collation ---------------------------------------------------------------


def test_prompt_and_label_masking_by_hand(tokenizer):
    text_tok = tokenizer.encode(" guten morgen", add_special_tokens=False)
    inputs, labels = batching.make_sequence(tokenizer, "de", "transcribe", "guten morgen")
    assert inputs == [SOT, DE, TRANSCRIBE, NOTS] + text_tok
    assert labels == [-100, -100, -100] + text_tok + [EOT]
    assert len(inputs) == len(labels)
    # the first scored position predicts the first text token from <|notimestamps|>
    assert inputs[3] == NOTS and labels[3] == text_tok[0]


def test_translate_items_get_translation_and_task_token(tokenizer):
    examples = read_examples_stub()
    items = batching.expand_items(examples, [0, 1], ["transcribe", "translate"], tokenizer)
    # de utterance -> transcribe + translate; en utterance -> transcribe only
    assert [(it.uid, it.task) for it in items] == [("a", "transcribe"), ("a", "translate"), ("b", "transcribe")]
    tr = items[1]
    assert tr.decoder_input_ids[:4] == (SOT, DE, TRANSLATE, NOTS)
    target = [t for t in tr.labels if t != -100]
    assert target[-1] == EOT
    assert tokenizer.decode(target[:-1]).strip() == "good morning"
    assert tokenizer.decode([t for t in items[0].labels if t != -100][:-1]).strip() == "guten morgen"


def read_examples_stub():
    from types import SimpleNamespace as NS

    return [
        NS(id="a", language="de", transcript="guten morgen", translation="good morning"),
        NS(id="b", language="en", transcript="hello", translation="hello"),
    ]


def test_empty_target_is_an_error(tokenizer):
    from types import SimpleNamespace as NS

    with pytest.raises(ValueError, match="x7.*empty translation"):
        batching.expand_items(
            [NS(id="x7", language="de", transcript="ja", translation=" ")], [0], ["transcribe", "translate"], tokenizer
        )


def test_unknown_language_is_an_error(tokenizer):
    with pytest.raises(KeyError, match="<|qq|>"):
        batching.prompt_ids(tokenizer, "qq", "transcribe")


def test_collate_pads_inputs_with_eot_and_labels_with_ignore():
    items = [
        batching.Item(1, "a", "de", "transcribe", (1, 2, 3), (-100, 5, 6)),
        batching.Item(0, "b", "de", "transcribe", (1, 2), (-100, 7)),
    ]
    feats = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    b = batching.collate(items, feats, pad_id=EOT)
    assert b["decoder_input_ids"].tolist() == [[1, 2, 3], [1, 2, EOT]]
    assert b["labels"].tolist() == [[-100, 5, 6], [-100, 7, -100]]
    assert torch.equal(b["input_features"][0], feats[1]) and torch.equal(b["input_features"][1], feats[0])


def test_step_indices_walk_through_epoch_permutations():
    n, per = 5, 3
    stream = [i for k in range(5) for i in batching.step_indices(n, 7, k, per)]
    assert sorted(stream[:5]) == list(range(5)) and sorted(stream[5:10]) == list(range(5))
    assert stream[:5] == list(batching.epoch_order(5, 7, 0))
    assert batching.step_indices(n, 7, 3, per) == stream[9:12]
    assert batching.step_indices(n, 8, 0, per) != batching.step_indices(n, 7, 0, per) or n < 3


def test_lr_schedule_values():
    f = lambda k, s="linear": lr_factor(k, warmup=2, total=6, schedule=s)  # noqa: E731
    assert [f(k) for k in range(6)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert f(2, "cosine") == 1.0 and abs(f(4, "cosine") - 0.5) < 1e-12
    assert f(5, "constant") == 1.0


def test_log_mel_bank_matches_context(tiny_model, splits):
    from transformers import WhisperConfig, WhisperProcessor

    fe = WhisperProcessor.from_pretrained(tiny_model).feature_extractor
    cfg = WhisperConfig.from_pretrained(tiny_model)
    n = batching.context_samples(cfg, fe)
    assert n == 100 * 2 * 160  # max_source_positions 100 = 2 s
    ex = read_examples(splits[0])
    bank = batching.log_mel_bank([e.audio for e in ex], fe, n, batch=3)
    assert bank.shape == (4, 80, 200) and bank.dtype == torch.float32
    ref = fe(ex[1].audio, sampling_rate=16000, max_length=n, return_tensors="np")["input_features"][0]
    np.testing.assert_allclose(bank[1].numpy(), ref, atol=1e-5)


# --- trainable parameters per method (tiny: d=64, ffn=256, 2+2 layers) -------------------------

# adapted linears: 64x64: 2 enc layers x 4 + 2 dec layers x 8 = 24; fc1 (256x64): 4; fc2 (64x256): 4
N_SQ, N_FC = 24, 8
BIASES = 2 * (3 * 64 + 256 + 64 + 2 * 64) + 3 * 64 + 2 * (6 * 64 + 256 + 64 + 3 * 64) + 64  # = 3328


@pytest.mark.parametrize(
    "method,peft,expected",
    [
        ("bitfit", {}, BIASES),
        ("lora", {"r": 2}, 2 * (N_SQ * 128 + N_FC * 320)),  # r (in + out) per layer
        ("adalora", {"init_r": 4}, 4 * (N_SQ * 128 + N_FC * 320) + 4 * 32),  # + init_r E per layer
        ("s2lora", {"r": 4}, 4 * (128 + 320 + 320) + 4 * 32),  # shared A,B per shape + c
    ],
)
def test_trainable_parameter_counts(tiny_model, method, peft, expected):
    from speechmerge.models import load_whisper

    model, _ = load_whisper(tiny_model)
    total = sum(p.numel() for p in model.parameters())
    m = build_method(method, model, peft, total_steps=10)
    n = sum(p.numel() for p in m.named_trainable().values())
    assert n == expected
    assert BIASES == 3328
    assert all(p.requires_grad for p in m.named_trainable().values())
    n_grad = sum(p.numel() for p in m.whisper.parameters() if p.requires_grad)
    assert n_grad == expected  # s2lora's shared factors are registered once, on the model
    assert total == 3615552


def test_full_trains_everything_but_encoder_positions(tiny_model):
    from speechmerge.models import load_whisper

    model, _ = load_whisper(tiny_model)
    m = build_method("full", model, {}, total_steps=10)
    names = set(m.named_trainable())
    assert "model.encoder.embed_positions.weight" not in names
    assert "model.decoder.embed_positions.weight" in names
    assert sum(p.numel() for p in m.named_trainable().values()) == 3615552 - 100 * 64


def test_unknown_peft_key_is_an_error(tiny_model, splits, tmp_path):
    with pytest.raises(KeyError, match="unknown hyperparameters.*'rank'"):
        run(tiny_model, splits, tmp_path / "m", method="lora", peft={"rank": 4})


def test_adalora_schedule_scaling():
    assert adalora_schedule(2000) == {"tinit": 200, "tfinal": 1000, "deltaT": 10}
    assert adalora_schedule(100) == {"tinit": 10, "tfinal": 50, "deltaT": 1}
    with pytest.raises(ValueError, match="no budgeting phase"):
        adalora_schedule(10, tinit=5, tfinal=5)


# --- the training loop -------------------------------------------------------------------------


def test_overfitting_four_utterances_reduces_loss(tiny_model, splits, tmp_path):
    info = run(tiny_model, splits, tmp_path / "m", steps=20, batch_size=4, lr=1e-2, warmup_steps=2, eval_every=10)
    rows = (tmp_path / "m" / "training_log.csv").read_text().splitlines()
    losses = [float(r.split(",")[2]) for r in rows[1:]]
    assert len(losses) == 20
    assert losses[-1] < 0.25 * losses[0], losses  # ln(51865) = 10.86 -> about 2
    assert info["samples_seen"] == 80 and info["best_step"] in (10, 20)


def test_output_directory_contents(tiny_model, splits, tmp_path):
    from speechmerge.models import load_whisper

    out = tmp_path / "m"
    info = run(tiny_model, splits, out, tasks=["transcribe", "translate"], steps=3, eval_every=2)
    names = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "train_info.json",
        "training_log.csv",
        "loss.png",
        "rank_allocation.json",
        "processor_config.json",
    } <= names
    assert json.loads((out / "rank_allocation.json").read_text()) == {}  # full fine-tuning: no ranks
    saved = json.loads((out / "train_info.json").read_text())
    assert saved["train_items"] == 4 + 3  # 3 de utterances translate too
    assert saved["trainable_params"] == info["trainable_params"] == 3615552 - 6400
    assert saved["best_step"] in (2, 3) and saved["steps"] == 3 and "provenance" in saved
    sd = load_file(str(out / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in sd.values())
    header = (out / "training_log.csv").read_text().splitlines()[0]
    assert header.startswith("step,lr,loss,dev_loss,dev_acc,elapsed")
    model, proc = load_whisper(out)  # a plain Whisper HF directory
    assert model.config.max_source_positions == 100
    assert not list(out.parent.glob(".m.*"))  # no temporary left behind


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_same_seed_gives_identical_weights(tiny_model, splits, tmp_path, precision):
    info = run(tiny_model, splits, tmp_path / "a", steps=3, seed=5, precision=precision)
    run(tiny_model, splits, tmp_path / "b", steps=3, seed=5, precision=precision)
    run(tiny_model, splits, tmp_path / "c", steps=3, seed=6, precision=precision)
    assert info["precision"] == precision
    a, b, c = (load_file(str(tmp_path / x / "model.safetensors")) for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize(
    "method,peft", [("full", {}), ("adalora", {"init_r": 4, "target_r": 2, "tinit": 1, "tfinal": 2, "deltaT": 1})]
)
def test_resume_equals_straight_run(tiny_model, splits, tmp_path, method, peft):
    kw = dict(method=method, peft=peft, steps=6, eval_every=2, checkpoint_every=100, lr=2e-3)
    run(tiny_model, splits, tmp_path / "straight", **kw)
    ckpt = tmp_path / "ckpt"
    train_p, dev_p = splits
    part = train(
        make_spec(checkpoint_dir=str(ckpt), **kw),
        tiny_model,
        [train_p],
        [dev_p],
        tmp_path / "resumed",
        threads=1,
        progress=False,
        stop_after=3,
    )
    assert part == {"finished": False, "step": 3, "checkpoint_dir": str(ckpt)}
    assert (ckpt / "step-0000003" / "state.json").exists() and not (tmp_path / "resumed").exists()
    info = run(tiny_model, splits, tmp_path / "resumed", checkpoint_dir=str(ckpt), **kw)
    assert info["resumed_from"].endswith("step-0000003")
    assert not ckpt.exists()  # removed after success
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    la = (tmp_path / "straight" / "training_log.csv").read_text().splitlines()
    lb = (tmp_path / "resumed" / "training_log.csv").read_text().splitlines()
    strip = lambda rows: [r.split(",")[:5] for r in rows]  # noqa: E731 (elapsed differs)
    assert strip(la) == strip(lb)


def test_checkpoint_of_another_spec_is_not_resumed(tiny_model, splits, tmp_path):
    ckpt = tmp_path / "ckpt"
    train_p, dev_p = splits
    train(
        make_spec(checkpoint_dir=str(ckpt), steps=4, seed=1),
        tiny_model,
        [train_p],
        [dev_p],
        tmp_path / "x",
        threads=1,
        progress=False,
        stop_after=2,
    )
    info = run(tiny_model, splits, tmp_path / "y", checkpoint_dir=str(ckpt), steps=4, seed=2)
    assert info["resumed_from"] is None


def test_nan_loss_stops_with_clear_error(tiny_model, splits, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"job test/boom: .* (loss|norm) is (nan|inf).* at step \d"):
        run(tiny_model, splits, tmp_path / "m", job="boom", lr=1e30, warmup_steps=0, max_grad_norm=1e30, steps=6)
    assert not (tmp_path / "m").exists()


def test_bitfit_changes_only_biases(tiny_model, splits, tmp_path):
    info = run(tiny_model, splits, tmp_path / "m", method="bitfit", steps=3, lr=1e-2)
    base = load_file(str(tiny_model / "model.safetensors"))
    tuned = load_file(str(tmp_path / "m" / "model.safetensors"))
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all(k.endswith(".bias") for k in changed)
    assert info["trainable_params"] == BIASES


@pytest.mark.parametrize("method,peft", [("lora", {"r": 2}), ("s2lora", {"r": 4, "threshold": 0.0})])
def test_peft_output_is_merged_plain_model(tiny_model, splits, tmp_path, method, peft):
    info = run(tiny_model, splits, tmp_path / "m", method=method, peft=peft, steps=3, lr=1e-2)
    base = load_file(str(tiny_model / "model.safetensors"))
    tuned = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert set(base) == set(tuned)  # no adapter tensors: merged into the weights
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all(
        k.rsplit(".", 2)[-2] in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2") and k.endswith(".weight")
        for k in changed
    )
    ranks = json.loads((tmp_path / "m" / "rank_allocation.json").read_text())
    assert len(ranks) == N_SQ + N_FC
    if method == "lora":
        assert set(ranks.values()) == {2}
    else:
        assert set(ranks.values()) == {4} and info["s2lora_pruning"]["coefficients"] == 4 * 32


def test_adalora_prunes_to_target_budget(tiny_model, splits, tmp_path):
    peft = {"init_r": 4, "target_r": 2, "tinit": 1, "tfinal": 2, "deltaT": 1}
    info = run(tiny_model, splits, tmp_path / "m", method="adalora", peft=peft, steps=6, lr=5e-3, select_best=False)
    ranks = json.loads((tmp_path / "m" / "rank_allocation.json").read_text())
    assert len(ranks) == N_SQ + N_FC
    assert sum(ranks.values()) == 2 * (N_SQ + N_FC)  # target_r x modules after the final allocation
    assert max(ranks.values()) <= 4
    assert info["adalora_schedule"] == {"tinit": 1, "tfinal": 2, "deltaT": 1, "total_step": 6}
    assert math.isfinite(info["best_dev_loss"])


# --- workflow scripts ----------------------------------------------------------------------------


def _run_script(path, snakemake, monkeypatch):
    import logging
    import runpy
    import sys

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # the script redirects stderr to its log
    try:
        runpy.run_path(path, init_globals={"snakemake": snakemake}, run_name="__main__")
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)


class _Files(list):
    def __init__(self, items=(), **named):
        super().__init__(items)
        self.__dict__.update(named)


def test_workflow_scripts_finetune_then_task_vector(tiny_model, splits, tmp_path, monkeypatch):
    from types import SimpleNamespace as NS

    from speechmerge.training.taskvector import apply_task_vector, read_metadata

    out = tmp_path / "results/models/exp/expert-de"
    spec = make_spec(
        experiment="exp", job="expert-de", steps=2, checkpoint_dir=str(tmp_path / "ckpt"), config_hash="cafe"
    )
    smk = NS(
        input=_Files(base=str(tiny_model / "config.json"), train=[str(splits[0])], dev=[str(splits[1])]),
        output=_Files(
            [str(out / "config.json"), str(out / "model.safetensors")],
            model=str(out / "config.json"),
            weights=str(out / "model.safetensors"),
        ),
        params=NS(spec=spec),
        threads=1,
        log=[str(tmp_path / "logs/finetune.log")],
    )
    _run_script("workflow_scripts/finetune.py", smk, monkeypatch)
    assert (out / "model.safetensors").exists() and (out / "rank_allocation.json").exists()
    assert "best step" in (tmp_path / "logs/finetune.log").read_text()

    tv = tmp_path / "results/taskvectors/exp/expert-de.safetensors"
    smk = NS(
        input=_Files(model=str(out / "model.safetensors"), base=str(tiny_model / "model.safetensors")),
        output=_Files([str(tv)]),
        params=NS(spec={"experiment": "exp", "job": "expert-de", "config_hash": "cafe"}),
        threads=1,
        log=[str(tmp_path / "logs/tv.log")],
    )
    _run_script("workflow_scripts/task_vector.py", smk, monkeypatch)
    md = read_metadata(tv)
    assert md["job"] == "expert-de" and md["method"] == "full" and md["steps"] == "2"
    assert json.loads(md["provenance"])["job_config_hash"] == "cafe"
    model = load_file(str(out / "model.safetensors"))
    rebuilt = apply_task_vector(tiny_model, tv)
    assert set(rebuilt) == set(model)
    assert all(torch.allclose(rebuilt[k], model[k], atol=1e-6) for k in model)


def test_gradient_accumulation_matches_one_big_batch(tiny_model, splits, tmp_path):
    """Loss and gradient norm are token means over the whole effective batch."""
    run(tiny_model, splits, tmp_path / "big", steps=2, batch_size=4, grad_accum=1, precision="float32")
    run(tiny_model, splits, tmp_path / "acc", steps=2, batch_size=2, grad_accum=2, precision="float32")

    def first_row(name):
        header, row = (tmp_path / name / "training_log.csv").read_text().splitlines()[:2]
        return dict(zip(header.split(","), row.split(",")))

    big, acc = first_row("big"), first_row("acc")
    assert float(acc["loss"]) == pytest.approx(float(big["loss"]), rel=1e-5)
    assert float(acc["grad_norm"]) == pytest.approx(float(big["grad_norm"]), rel=1e-4)


def test_attention_and_precision_choices():
    from speechmerge.numerics import resolve_precision
    from speechmerge.training.spec import choose_attention

    assert choose_attention("auto", 300) == "eager" and choose_attention("auto", 1500) == "sdpa"
    assert choose_attention("sdpa", 300) == "sdpa"
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("auto") in ("float32", "bfloat16")
