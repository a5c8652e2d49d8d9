"""Real-data adapters: manifest TSV and Hugging Face CoVoST-2 / FLEURS / Common Voice datasets."""

import io

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, Dataset

from speechmerge.data import adapters
from speechmerge.data.adapters import AdapterError, from_hf_dataset, from_manifest, load_real
from speechmerge.data.audio import AudioError, decode_audio
from speechmerge.data.io import COLUMNS, read_examples, write_split


def tone(sr, seconds, freq=440.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def wav_bytes(sr, seconds, fmt="WAV"):
    buf = io.BytesIO()
    sf.write(buf, tone(sr, seconds), sr, format=fmt)
    return buf.getvalue()


@pytest.fixture
def manifest(tmp_path):
    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "a.wav", tone(8000, 1.0), 8000)
    sf.write(tmp_path / "clips" / "b.flac", tone(44100, 0.5, channels=2), 44100)
    sf.write(tmp_path / "c.wav", tone(16000, 0.25), 16000)
    lines = [
        "audio\tlanguage\ttranscript\ttranslation\tdomain",
        "clips/a.wav\tde\tGuten Morgen.\tGood morning.\ttelephone",
        "clips/b.flac\tfr\tBonjour.\tHello.\t",
        f"{tmp_path / 'c.wav'}\ten\tHello there.\t\t",
    ]
    path = tmp_path / "set.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_manifest_records(manifest, tmp_path):
    recs = from_manifest(manifest, split="test", progress=False)
    assert [r["id"] for r in recs] == ["set-000000", "set-000001", "set-000002"]
    assert all(set(r) == set(COLUMNS) for r in recs)
    assert [r["language"] for r in recs] == ["de", "fr", "en"]
    assert [r["domain"] for r in recs] == ["telephone", "clean", "clean"]
    assert [r["translation"] for r in recs] == ["Good morning.", "Hello.", ""]
    assert [r["duration"] for r in recs] == [1.0, 0.5, 0.25]  # 8 kHz, 44.1 kHz stereo, 16 kHz
    wave = decode_audio(recs[1]["audio"])
    assert len(wave) == 8000
    spec = np.abs(np.fft.rfft(wave))
    assert np.fft.rfftfreq(len(wave), 1 / 16000)[np.argmax(spec)] == pytest.approx(440, abs=3)
    write_split(recs, tmp_path / "out.parquet")
    assert read_examples(tmp_path / "out.parquet")[0].transcript == "Guten Morgen."


def test_manifest_missing_file_names_the_row(manifest):
    manifest.write_text(manifest.read_text() + "clips/missing.wav\tde\tHallo.\t\t\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"row 4 .*missing\.wav"):
        from_manifest(manifest, progress=False)


def test_manifest_undecodable_and_empty_audio_name_the_file(manifest, tmp_path):
    (tmp_path / "clips" / "bad.wav").write_text("not audio at all")
    sf.write(tmp_path / "clips" / "empty.wav", np.zeros(0, np.float32), 16000)
    header = manifest.read_text().splitlines()[0]
    bad = tmp_path / "bad.tsv"
    bad.write_text(f"{header}\nclips/bad.wav\tde\tHallo.\t\t\n")
    with pytest.raises(AudioError, match=r"bad\.wav.*cannot decode"):
        from_manifest(bad, progress=False)
    empty = tmp_path / "empty.tsv"
    empty.write_text(f"{header}\nclips/empty.wav\tde\tHallo.\t\t\n")
    with pytest.raises(AudioError, match=r"empty\.wav.*empty"):
        from_manifest(empty, progress=False)


def test_manifest_bad_rows(manifest, tmp_path):
    header = manifest.read_text().splitlines()[0]
    p = tmp_path / "m.tsv"
    p.write_text(f"{header}\nclips/a.wav\tde\t  \t\t\n")
    with pytest.raises(AdapterError, match="row 1 .*empty transcript"):
        from_manifest(p, progress=False)
    p.write_text(f"{header}\nclips/a.wav\tqq\tHallo.\t\t\n")
    with pytest.raises(AdapterError, match="row 1 .*'qq'"):
        from_manifest(p, progress=False)
    p.write_text("file\ttext\nclips/a.wav\tHallo.\n")
    with pytest.raises(AdapterError, match="'audio'"):
        from_manifest(p, progress=False)
    p.write_text("path\ttext\nclips/a.wav\tHallo.\n")  # aliases + language from the argument
    assert from_manifest(p, language="de", progress=False)[0]["language"] == "de"


def covost_ds():
    return Dataset.from_dict(
        {
            "client_id": ["spk1", "spk2"],
            "file": ["x.mp3", "y.mp3"],
            "audio": [
                {"array": tone(48000, 0.5).tolist(), "sampling_rate": 48000, "path": "x.mp3"},
                {"array": tone(22050, 0.2).tolist(), "sampling_rate": 22050, "path": "y.mp3"},
            ],
            "sentence": ["Bon dia a tothom.", "Fins demà."],
            "translation": ["Good morning everyone.", "See you tomorrow."],
            "id": ["x", "y"],
        }
    )


def test_covost2_arrays():
    recs = from_hf_dataset(covost_ds(), "covost2", language="ca", split="dev", subset="ca", progress=False)
    assert [r["id"] for r in recs] == ["ca-000000", "ca-000001"]
    assert [r["transcript"] for r in recs] == ["Bon dia a tothom.", "Fins demà."]
    assert [r["translation"] for r in recs] == ["Good morning everyone.", "See you tomorrow."]
    assert [r["voice"] for r in recs] == ["spk1", "spk2"]
    assert [r["duration"] for r in recs] == [0.5, 0.2]
    assert {r["language"] for r in recs} == {"ca"} and {r["split"] for r in recs} == {"dev"}
    with pytest.raises(AdapterError, match="no language given"):
        from_hf_dataset(covost_ds(), "covost2", progress=False)


def test_fleurs_bytes_with_audio_feature_decoded_without_torchcodec():
    ds = Dataset.from_dict(
        {
            "id": [1001, 1001],
            "num_samples": [8000, 4000],
            "path": ["a.wav", "b.wav"],
            "audio": [{"bytes": wav_bytes(16000, 0.5), "path": None}, {"bytes": wav_bytes(8000, 0.5), "path": None}],
            "transcription": ["bon dia", "bon dia"],
            "raw_transcription": ["Bon dia!", "Bon dia!"],
            "gender": [0, 1],
            "lang_id": [10, 10],
            "language": ["Catalan", "Catalan"],
            "lang_group_id": [0, 0],
        }
    ).cast_column("audio", Audio())  # decode=True as the hub gives it
    recs = from_hf_dataset(ds, "fleurs", progress=False)
    assert [r["id"] for r in recs] == ["fleurs-000000", "fleurs-000001"]  # FLEURS ids repeat; ours do not
    assert [r["transcript"] for r in recs] == ["Bon dia!", "Bon dia!"]
    assert [r["language"] for r in recs] == ["ca", "ca"]
    assert [r["voice"] for r in recs] == ["gender=0", "gender=1"]
    assert [r["translation"] for r in recs] == ["", ""]
    assert [r["duration"] for r in recs] == [0.5, 0.5]


def test_common_voice_locale_and_empty_sentence():
    def ds(sentence):
        return Dataset.from_dict(
            {
                "client_id": ["c1"],
                "path": ["sv_1.mp3"],
                "audio": [{"bytes": wav_bytes(32000, 0.3, fmt="FLAC"), "path": "sv_1.mp3"}],
                "sentence": [sentence],
                "up_votes": [2],
                "down_votes": [0],
                "age": ["twenties"],
                "gender": ["female"],
                "accent": [""],
                "locale": ["sv-SE"],
                "segment": [""],
                "variant": [""],
            }
        )

    rec = from_hf_dataset(ds("Hej då."), "common_voice", split="train", progress=False)[0]
    assert rec["language"] == "sv" and rec["voice"] == "c1" and rec["duration"] == 0.3
    with pytest.raises(AdapterError, match="common_voice row 0: empty reference text"):
        from_hf_dataset(ds("  "), "common_voice", progress=False)


def test_hf_errors():
    with pytest.raises(AdapterError, match="unknown real-data source 'librispeech'"):
        from_hf_dataset(covost_ds(), "librispeech")
    with pytest.raises(AdapterError, match="transcript columns"):
        from_hf_dataset(covost_ds().remove_columns("sentence"), "covost2", language="ca")
    bad = Dataset.from_dict({"audio": [{"bytes": b"junk", "path": None}], "sentence": ["x"], "translation": ["y"]})
    with pytest.raises(AudioError, match="covost2 row 0"):
        from_hf_dataset(bad, "covost2", language="ca", progress=False)


def test_load_real_calls_load_dataset_with_mapped_names(monkeypatch):
    calls = []

    def fake_load_dataset(name, config, split, **kw):
        calls.append((name, config, split, kw))
        return covost_ds()

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    recs = load_real("covost2", "dev", language="ca", max_examples=1, data_dir="/cv", progress=False)
    assert calls == [("facebook/covost2", "ca_en", "validation[:1]", {"data_dir": "/cv"})]
    assert len(recs) == 1 and recs[0]["split"] == "dev"
    calls.clear()
    monkeypatch.setattr(adapters, "from_hf_dataset", lambda ds, kind, **kw: [kind, kw["language"]])
    assert load_real("fleurs", "test", language="zh") == ["fleurs", "zh"]
    assert calls[-1][:3] == ("google/fleurs", "cmn_hans_cn", "test")
    load_real("common_voice", "train", language="sv")
    assert calls[-1][:3] == ("mozilla-foundation/common_voice_17_0", "sv-SE", "train")
    with pytest.raises(AdapterError, match="no default config for language 'xx'"):
        load_real("fleurs", "test", language="xx")
