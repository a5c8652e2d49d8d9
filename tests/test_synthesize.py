"""Dataset building: columns, ids, determinism, held-out voices, babble pool, the workflow script."""

import logging
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from speechmerge.data import espeak
from speechmerge.data.audio import decode_audio
from speechmerge.data.io import COLUMNS, load_split, read_examples, split_provenance, write_split
from speechmerge.data.synthesize import synthesize_split
from speechmerge.data.voices import PROFILES, VARIANT_POOLS, sample_voice, utterance_rng

HEADER = "sid split en ca de es fr it id nl pt ru sv zh".split()
ROOT = Path(__file__).resolve().parents[1]


def _row(i, split, en, de, fr):
    other = {
        "ca": "Hola amic.",
        "es": "Hola amigo.",
        "it": "Ciao amico.",
        "id": "Halo teman.",
        "nl": "Hallo vriend.",
        "pt": "Olá amigo.",
        "ru": "Привет друг.",
        "sv": "Hej vän.",
        "zh": "你好朋友。",
    }
    cells = {"sid": f"s{i:04d}", "split": split, "en": en, "de": de, "fr": fr, **other}
    return "\t".join(cells[c] for c in HEADER)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rows = [
        _row(
            1,
            "train",
            "The cat sleeps on the warm mat.",
            "Die Katze schläft auf der Matte.",
            "Le chat dort sur le tapis.",
        ),
        _row(2, "train", "We walk to school every day.", "Wir gehen jeden Tag zur Schule.", "Nous allons à l'école."),
        _row(3, "train", "The river is very cold today.", "Der Fluss ist heute sehr kalt.", "La rivière est froide."),
        _row(4, "dev", "My brother reads a long book.", "Mein Bruder liest ein Buch.", "Mon frère lit un livre."),
        _row(5, "test", "The market opens early in summer.", "Der Markt öffnet früh.", "Le marché ouvre tôt."),
        _row(6, "test", "She sings a song for her friends.", "Sie singt ein Lied.", "Elle chante une chanson."),
    ]
    path = tmp_path_factory.mktemp("corpus") / "corpus.tsv"
    path.write_text("\t".join(HEADER) + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _synth(corpus, **kw):
    args = dict(
        language="de",
        domain_transforms=[],
        split="train",
        renderings=2,
        seed=7,
        domain_name="clean",
        subset="de",
        progress=False,
    )
    args.update(kw)
    return synthesize_split(corpus, **args)


def test_records_have_the_contract_columns(corpus):
    recs = _synth(corpus)
    assert len(recs) == 3 * 2
    assert [r["id"] for r in recs] == [f"de-s000{i}-r{k}" for i in (1, 2, 3) for k in (0, 1)]
    for r in recs:
        assert set(r) == set(COLUMNS)
        assert r["language"] == "de" and r["domain"] == "clean" and r["split"] == "train"
        wave = decode_audio(r["audio"])
        assert r["duration"] == pytest.approx(len(wave) / 16_000, abs=1e-5)
        assert 0.5 < r["duration"] < 6
        assert r["voice"].split("|")[0] in VARIANT_POOLS["adult"]["train"]
    assert recs[0]["transcript"] == "Die Katze schläft auf der Matte."
    assert recs[0]["translation"] == "The cat sleeps on the warm mat."
    # two renderings of one sentence differ (different voice draws)
    assert recs[0]["voice"] != recs[1]["voice"] and recs[0]["audio"] != recs[1]["audio"]
    # the audio is what eSpeak renders for that voice (clean domain = identity up to FLAC 16 bit)
    v = recs[0]["voice"].split("|")
    ref = espeak.synthesize(
        recs[0]["transcript"],
        "de",
        voice_variant=v[0],
        rate=int(v[1][5:]),
        pitch=int(v[2][6:]),
        pitch_range=int(v[3][6:]),
    )
    assert np.abs(decode_audio(recs[0]["audio"]) - np.clip(ref, -1, 1)).max() < 1 / 32768 + 1e-6


def test_same_seed_same_bytes_and_order_independence(corpus, tmp_path):
    a = _synth(corpus, domain_transforms=[{"type": "noise", "snr_db": [5, 15]}], domain_name="noisy")
    b = _synth(corpus, domain_transforms=[{"type": "noise", "snr_db": [5, 15]}], domain_name="noisy")
    assert a == b
    write_split(a, tmp_path / "a.parquet")
    write_split(b, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    # an utterance does not depend on how many others are made
    prefix = _synth(corpus, sentences=1, domain_transforms=[{"type": "noise", "snr_db": [5, 15]}], domain_name="noisy")
    assert prefix == a[:2]
    # another seed, other voices
    assert [r["voice"] for r in _synth(corpus, seed=8)] != [r["voice"] for r in a]


def test_parquet_roundtrip(corpus, tmp_path):
    recs = _synth(corpus, renderings=1)
    write_split(recs, tmp_path / "x.parquet", provenance={"config_hash": "abc"})
    ds = load_split(tmp_path / "x.parquet")
    assert ds.column_names == list(COLUMNS) and len(ds) == 3
    ex = read_examples(tmp_path / "x.parquet")
    assert ex[1].transcript == "Wir gehen jeden Tag zur Schule." and ex[1].audio.dtype == np.float32
    assert split_provenance(tmp_path / "x.parquet") == {"config_hash": "abc"}


def test_test_split_uses_held_out_voices(corpus):
    for profile in PROFILES:
        pools = VARIANT_POOLS[profile]
        assert not set(pools["train"]) & set(pools["test"])
        train = {
            sample_voice(0, "en", f"s{i:04d}", k, split=s, profile=profile).variant
            for i in range(200)
            for k in range(2)
            for s in ("train", "dev")
        }
        test = {sample_voice(0, "en", f"s{i:04d}", 0, split="test", profile=profile).variant for i in range(200)}
        assert train == set(pools["train"]) and test == set(pools["test"])
    recs = _synth(corpus, split="test", renderings=1)
    assert [r["id"] for r in recs] == ["de-s0005-r0", "de-s0006-r0"]
    assert all(r["voice"].split("|")[0] in VARIANT_POOLS["adult"]["test"] for r in recs)


def test_voice_profiles_and_seeding():
    child = [sample_voice(3, "zh", f"s{i}", 0, split="train", profile="child") for i in range(50)]
    adult = [sample_voice(3, "zh", f"s{i}", 0, split="train", profile="adult") for i in range(50)]
    assert min(v.pitch for v in child) >= 75 > max(v.pitch for v in adult)
    assert np.mean([v.rate for v in child]) > np.mean([v.rate for v in adult])
    assert sample_voice(3, "zh", "s1", 1, split="train") == sample_voice(3, "zh", "s1", 1, split="train")
    assert utterance_rng(0, "a", 1).random() == utterance_rng(0, "a", 1).random()
    assert utterance_rng(0, "a", 1).random() != utterance_rng(0, "a", 2).random()
    with pytest.raises(ValueError, match="voice profile 'teen'"):
        sample_voice(0, "en", "s1", 0, split="train", profile="teen")


def test_babble_domain_and_workers_give_identical_records(corpus):
    cfg = [{"type": "babble", "snr_db": 10, "talkers": 2}]
    one = _synth(corpus, language="fr", subset="babble", domain_transforms=cfg, domain_name="babble")
    two = _synth(corpus, language="fr", subset="babble", domain_transforms=cfg, domain_name="babble", workers=2)
    assert one == two
    assert one[0]["id"] == "babble-s0001-r0" and one[0]["domain"] == "babble"
    assert one[0]["transcript"] == "Le chat dort sur le tapis."


def test_unknown_language_and_bad_domain_fail_early(corpus):
    with pytest.raises(espeak.SynthesisError, match="'xx'"):
        _synth(corpus, language="xx")
    with pytest.raises(ValueError, match="unknown acoustic transform type 'hum'"):
        _synth(corpus, domain_transforms=[{"type": "hum"}])


def test_workflow_script(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # the script redirects stderr to its log
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    out = tmp_path / "results" / "train.parquet"
    spec = {
        "experiment": "domains",
        "subset": "telephone",
        "language": "de",
        "domain": "telephone",
        "transforms": [{"type": "telephone"}],
        "split": "dev",
        "sentences": 1,
        "renderings": 2,
        "seed": 0,
        "voice_profile": "adult",
        "source": "synth",
        "config_hash": "h",
    }
    smk = SimpleNamespace(
        input=SimpleNamespace(corpus=str(corpus)),
        output=[str(out)],
        params=SimpleNamespace(spec=spec),
        log=[str(tmp_path / "log.txt")],
        threads=1,
    )
    runpy.run_path(str(ROOT / "workflow_scripts" / "synthesize_corpus.py"), init_globals={"snakemake": smk})
    ex = read_examples(out)
    assert [e.id for e in ex] == ["telephone-s0004-r0", "telephone-s0004-r1"]
    assert {e.domain for e in ex} == {"telephone"} and {e.split for e in ex} == {"dev"}
    assert split_provenance(out)["config_hash"] == "h"
    assert not list(out.parent.glob(".*.tmp"))
    assert "wrote 2 utterances" in (tmp_path / "log.txt").read_text()


def test_arrow_schema_equals_the_datasets_features_schema():
    """write_split builds its schema without importing datasets; it must be the very schema
    (and huggingface metadata) that datasets derives from the split's Features."""
    from speechmerge.data.io import _features, arrow_schema

    ours, theirs = arrow_schema(), _features().arrow_schema
    assert ours.equals(theirs, check_metadata=True)
    assert ours.metadata == theirs.metadata


def test_read_examples_matches_load_split_and_checks_columns(corpus, tmp_path):
    recs = _synth(corpus, renderings=1)
    path = tmp_path / "t.parquet"
    write_split(recs, path)
    rows = list(load_split(path))
    for ex, row in zip(read_examples(path), rows, strict=True):
        assert {k: getattr(ex, k) for k in COLUMNS if k != "audio"} == {k: row[k] for k in COLUMNS if k != "audio"}
        assert np.array_equal(ex.audio, decode_audio(row["audio"]))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), str(tmp_path / "other.parquet"))
    with pytest.raises(ValueError, match=r"other\.parquet: not a speechmerge split.*'audio'"):
        read_examples(tmp_path / "other.parquet")
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        read_examples(tmp_path / "missing.parquet")


def test_write_split_streams_records_a_row_group_at_a_time(tmp_path):
    """Records may be a generator, read as they are written; the provenance function is called
    after the last one (so it can count what the reader skipped on the way)."""
    from speechmerge.data.audio import encode_flac
    from speechmerge.data.io import ROW_GROUP

    flac = encode_flac(np.full(1600, 0.1, dtype=np.float32), 16000)
    seen = []

    def records(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise RuntimeError(f"reader failed at {i}")
            seen.append(i)
            yield {"id": f"u{i}", "audio": flac, "language": "de", "domain": "d", "transcript": "t",
                   "translation": "", "voice": "", "split": "train", "duration": 0.1}  # fmt: skip

    out = tmp_path / "s.parquet"
    n = write_split(records(ROW_GROUP + 5), out, provenance=lambda: {"n_seen": len(seen)})
    assert n == ROW_GROUP + 5 and split_provenance(out) == {"n_seen": ROW_GROUP + 5}
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(out).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [ROW_GROUP, 5]
    assert [e.id for e in read_examples(out)] == [f"u{i}" for i in range(ROW_GROUP + 5)]
    # a reader that fails half-way leaves nothing behind, and the old file untouched
    before = out.read_bytes()
    with pytest.raises(RuntimeError, match=f"reader failed at {ROW_GROUP + 1}"):
        write_split(records(ROW_GROUP + 5, fail_at=ROW_GROUP + 1), out)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet"]
