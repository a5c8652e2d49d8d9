"""Corpora read from their released on-disk layouts (speechmerge.data.readers): a Common Voice
release built here with real MP3 clips and the release's TSV header."""

import copy
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from corpus_fixtures import HEADER, SENTENCES, hf_rows, make_covost, make_fleurs, make_release

from speechmerge.config import ROOT, deep_update, load_config
from speechmerge.data.adapters import AdapterError
from speechmerge.data.io import split_provenance
from speechmerge.data.readers import common_voice as cv
from speechmerge.data.readers import get_reader, reader_names
from speechmerge.plan import PlanError, build_plan


def test_registry():
    assert "common_voice" in reader_names()
    assert get_reader("common_voice").records is cv.iter_records
    assert "fleurs" in reader_names()
    assert reader_names() == ["common_voice", "covost2", "fleurs", "hf_disk"]
    assert get_reader("fleurs").speakers is None  # FLEURS has no speaker ids
    with pytest.raises(KeyError, match="no local reader for data source 'manifest'"):
        get_reader("manifest")


def test_reads_a_release_split(tmp_path):
    root = make_release(tmp_path / "cv")
    recs = cv.read(root, language="de", split="dev", subset="de", progress=False)
    assert [r["id"] for r in recs] == ["common_voice_de_1003", "common_voice_de_1004", "common_voice_de_1005"]
    assert [r["voice"] for r in recs] == ["speaker1", "speaker0", "speaker1"]  # client_id is the speaker
    assert recs[0]["transcript"] == SENTENCES[3] and recs[1]["transcript"] == SENTENCES[0]  # quotes kept
    assert {r["split"] for r in recs} == {"dev"} and {r["language"] for r in recs} == {"de"}
    # decoded from MP3 at 48 kHz to 16 kHz mono; MP3 adds encoder delay and padding
    assert recs[0]["duration"] == pytest.approx(0.7, abs=0.08) and recs[2]["duration"] == pytest.approx(0.9, abs=0.08)
    assert len(cv.read(root, language="de", split="train", max_examples=2, progress=False)) == 2


def test_locale_folder_and_layout_errors(tmp_path):
    root = make_release(tmp_path / "cv", locale="sv-SE", splits=("test",), n=1)
    assert cv.read(root, language="sv", split="test", progress=False)[0]["language"] == "sv"
    with pytest.raises(FileNotFoundError, match=r"no folder de/ for language 'de'; locales found: \['sv-SE'\]"):
        cv.check_layout(root, "de", "test")
    with pytest.raises(FileNotFoundError, match=r"train.tsv is missing"):
        cv.check_layout(root, "sv", "train")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        cv.check_layout(tmp_path / "nowhere", "sv", "test")


def test_bad_rows_name_file_and_row(tmp_path):
    root = make_release(tmp_path / "cv", splits=("test",))
    tsv = root / "de" / "test.tsv"
    lines = tsv.read_text().splitlines()
    (root / "de" / "clips" / lines[2].split("\t")[1]).unlink()
    with pytest.raises(
        FileNotFoundError, match=r"test.tsv row 2 \(line 3\): clip not found: .*common_voice_de_1001.mp3"
    ):
        cv.read(root, language="de", split="test", progress=False)
    with pytest.raises(AdapterError, match=r"5 utterances asked for \(data.test.sentences\) but it has 3 rows"):
        cv.read(root, language="de", split="test", max_examples=5, progress=False)
    tsv.write_text("\n".join([lines[0].replace("sentence\t", "text\t")] + lines[1:]) + "\n")
    with pytest.raises(AdapterError, match=r"no column\(s\) \['sentence'\]"):
        cv.read(root, language="de", split="test", progress=False)


def test_hours_draw_utterances_by_seed_until_the_duration(tmp_path):
    root = make_release(tmp_path / "cv", splits=("train",), n=8)
    want = 2.0 / 3600  # two seconds of the eight clips (0.6-1.2 s each)
    a = cv.read(root, language="de", split="train", hours=want, seed=0, progress=False)
    again = cv.read(root, language="de", split="train", hours=want, seed=0, progress=False)
    assert [r["id"] for r in a] == [r["id"] for r in again]
    ids = [r["id"] for r in a]
    assert ids == sorted(ids)  # the release's order is kept
    # drawn until the clips' header durations reach two seconds: at least two clips, not all eight
    assert 2 <= len(a) < 8 and sum(r["duration"] for r in a) >= 1.9
    others = {
        tuple(r["id"] for r in cv.read(root, language="de", split="train", hours=want, seed=s, progress=False))
        for s in range(6)
    }
    assert len(others) > 1  # the seed decides which
    with pytest.raises(ValueError, match=r"train.tsv \(data.train.hours\): 1 hours asked for but the split holds 0.00"):
        cv.read(root, language="de", split="train", hours=1, progress=False)


def test_bad_clips_stop_the_job_or_are_skipped_and_counted(tmp_path):
    root = make_release(tmp_path / "cv", splits=("test",), n=4)
    clips = root / "de" / "clips"
    (clips / "common_voice_de_1001.mp3").unlink()
    sf.write(clips / "common_voice_de_1002.mp3", np.zeros(48000, dtype=np.float32), 48000, format="MP3")
    with pytest.raises(FileNotFoundError, match=r"row 2 \(line 3\): clip not found"):
        cv.read(root, language="de", split="test", progress=False)
    skipped = []
    recs = cv.read(root, language="de", split="test", on_bad_audio="skip", skipped=skipped, progress=False)
    assert [r["id"] for r in recs] == ["common_voice_de_1000", "common_voice_de_1003"]
    assert [(s["id"], s["row"]) for s in skipped] == [("common_voice_de_1001", 2), ("common_voice_de_1002", 3)]
    assert "clip not found" in skipped[0]["reason"] and "silent" in skipped[1]["reason"]


def test_manifest_rows_with_bad_audio_can_be_skipped(tmp_path):
    from speechmerge.data.adapters import from_manifest

    good = tmp_path / "good.wav"
    sf.write(good, 0.2 * np.sin(np.arange(8000) / 5).astype(np.float32), 16000)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    tsv = tmp_path / "m.tsv"
    tsv.write_text("audio\ttranscript\tlanguage\ngood.wav\thallo\tde\nbroken.wav\twelt\tde\nmissing.wav\tda\tde\n")
    with pytest.raises(Exception, match=r"broken.wav .*row 2"):
        from_manifest(tsv, progress=False)
    skipped = []
    recs = from_manifest(tsv, on_bad_audio="skip", skipped=skipped, progress=False)
    assert [r["transcript"] for r in recs] == ["hallo"]
    assert [s["row"] for s in skipped] == [2, 3]


# ----- the plan ---------------------------------------------------------------------------
SMOKE = load_config(ROOT / "config.yaml", ROOT / "presets" / "smoke.yaml")


def _peft_from(root, **data):
    cfg = copy.deepcopy(SMOKE)
    exp = {
        "language": "de",
        "cross_domain": [],
        "data": {"source": "common_voice", "root": str(root), "train": {"sentences": 2}, "dev": {"sentences": 1},
                 "test": {"sentences": 3}, **data},
    }  # fmt: skip
    return deep_update(cfg, {"experiments": {"peft": exp}})


def test_plan_reads_from_root_and_names_what_is_missing(tmp_path):
    root = make_release(tmp_path / "cv")
    plan = build_plan(_peft_from(root))
    specs = [d for (e, _, _), d in plan.datasets.items() if e == "peft"]
    assert specs and all(d["root"] == str(root) and d["source"] == "common_voice" for d in specs)
    with pytest.raises(PlanError, match=r"'experiments.peft.data.root': Common Voice root .*nowhere is not a folder"):
        build_plan(_peft_from(tmp_path / "nowhere"))
    with pytest.raises(PlanError, match=r"'experiments.peft.data': hf_name and root both given"):
        build_plan(_peft_from(root, hf_name="mozilla-foundation/common_voice_17_0"))
    with pytest.raises(PlanError, match="root is not used by"):
        build_plan(_peft_from(root, source="synth"))
    specs = build_plan(_peft_from(root, on_bad_audio="skip")).datasets.values()
    assert {d.get("on_bad_audio") for d in specs if d["experiment"] == "peft"} == {"skip"}
    assert "on_bad_audio" not in next(iter(build_plan(_peft_from(root, on_bad_audio="error")).datasets.values()))
    plan = build_plan(_peft_from(root, train={"sentences": None, "hours": 0.5}))
    assert {d.get("hours") for (e, _, s), d in plan.datasets.items() if e == "peft" and s == "train"} == {0.5}
    with pytest.raises(PlanError, match=r"'experiments.peft.data.train': sentences and hours both given"):
        build_plan(_peft_from(root, train={"sentences": 2, "hours": 0.5}))
    with pytest.raises(
        PlanError, match=r"'experiments.peft.data.train.hours': hours select recorded speech read from disk"
    ):
        cfg = _peft_from(root, source="synth", train={"sentences": None, "hours": 0.5})
        del cfg["experiments"]["peft"]["data"]["root"]
        build_plan(cfg)


def test_snakemake_builds_a_split_from_the_release(tmp_path):
    root = make_release(tmp_path / "cv")
    (root / "de" / "clips" / "common_voice_de_1007.mp3").write_bytes(b"")  # an empty clip in the test split
    config = tmp_path / "cv.yaml"
    config.write_text(
        "experiments:\n"
        "  peft:\n"
        "    language: de\n"
        "    cross_domain: []\n"
        f"    data: {{source: common_voice, root: {root}, on_bad_audio: skip, train: {{sentences: 2}},\n"
        "           dev: {sentences: 1},\n"
        "           test: {sentences: 3}}\n"
    )
    target = "results/data/peft/child/test.parquet"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(ROOT / "presets" / "smoke.yaml"), str(config), "--cores", "1", target]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_parquet(tmp_path / target)
    assert list(df["id"]) == ["common_voice_de_1006", "common_voice_de_1008"]
    assert list(df["transcript"]) == [SENTENCES[2], SENTENCES[0]]
    # the clip that was left out is counted in the split's provenance
    prov = split_provenance(tmp_path / target)
    assert prov["skipped_audio"]["n"] == 1 and prov["skipped_audio"]["clips"][0]["id"] == "common_voice_de_1007"


@pytest.mark.parametrize(
    "source, hint",
    [
        ("common_voice", "set data.root to the release on disk"),
        ("fleurs", "set data.root"),
        ("covost2", "set data.root"),
    ],
)
def test_a_script_based_hub_dataset_names_the_local_alternative(monkeypatch, source, hint):
    import datasets

    from speechmerge.data.adapters import load_real

    def script_dataset(name, *a, **k):
        raise RuntimeError(f"Dataset scripts are no longer supported, but found {name.split('/')[-1]}.py")

    monkeypatch.setattr(datasets, "load_dataset", script_dataset)
    with pytest.raises(AdapterError, match=f"{source}: the hub dataset .* is a loading script.*; {hint}"):
        load_real(source, "test", language="de", progress=False)


# ----- FLEURS ---------------------------------------------------------------------------------
@pytest.mark.parametrize("packed", [True, False])
def test_fleurs_release_from_archive_or_folder(tmp_path, packed):
    from speechmerge.data.readers import fleurs

    root = make_fleurs(tmp_path / "fleurs", packed=packed)
    recs = fleurs.read(root, language="de", split="dev", progress=False)
    assert [r["id"] for r in recs] == ["fleurs-de_de-de_de-110", "fleurs-de_de-de_de-111"]
    assert [r["transcript"] for r in recs] == ["Satz 110, gelesen.", "Satz 111, gelesen."]
    # n-way parallel: the English reading of the same sentence id is the translation
    assert [r["translation"] for r in recs] == ["Sentence 110, read.", "Sentence 111, read."]
    assert [r["duration"] for r in recs] == [0.5, 1.0]
    assert not list((root / "de_de" / "audio").glob("dev/*")) or not packed  # nothing unpacked next to the release


def test_fleurs_layout_and_line_errors(tmp_path):
    from speechmerge.data.readers import fleurs

    root = make_fleurs(tmp_path / "fleurs", splits=("test",), english=False)
    assert fleurs.read(root, language="de", split="test", progress=False)[0]["translation"] == ""
    with pytest.raises(FileNotFoundError, match=r"no folder it_it/ for language 'it'; found: \['de_de'\]"):
        fleurs.check_layout(root, "it", "test")
    with pytest.raises(FileNotFoundError, match=r"train.tsv is missing"):
        fleurs.check_layout(root, "de", "train")
    tsv = root / "de_de" / "test.tsv"
    tsv.write_text(tsv.read_text() + "999\tshort.wav\tonly three\n")
    with pytest.raises(AdapterError, match=r"test.tsv line 3: 3 fields, a FLEURS TSV line has 7"):
        fleurs.read(root, language="de", split="test", progress=False)
    tsv.write_text("\n".join(tsv.read_text().splitlines()[:2] + ["999\tmissing.wav\tx\tx\tx\t16000\tMALE"]) + "\n")
    with pytest.raises(FileNotFoundError, match=r"line 3: audio file missing.wav not found"):
        fleurs.read(root, language="de", split="test", progress=False)
    skipped = []
    recs = fleurs.read(root, language="de", split="test", on_bad_audio="skip", skipped=skipped, progress=False)
    assert len(recs) == 2 and [s["row"] for s in skipped] == [3]


def test_fleurs_through_the_plan(tmp_path):
    root = make_fleurs(tmp_path / "fleurs")
    plan = build_plan(_peft_from(root, source="fleurs"))
    assert {d["root"] for (e, _, _), d in plan.datasets.items() if e == "peft"} == {str(root)}
    with pytest.raises(PlanError, match=r"'experiments.peft.data.root': FLEURS root .* has no folder it_it/"):
        cfg = _peft_from(root, source="fleurs")
        cfg["experiments"]["peft"]["language"] = "it"
        build_plan(cfg)


# ----- CoVoST 2 -------------------------------------------------------------------------------
def test_covost2_joins_translations_with_the_common_voice_clips(tmp_path):
    from speechmerge.data.readers import covost2

    root = make_covost(tmp_path / "covost")
    train = covost2.read(root, language="de", split="train", progress=False)
    # CoVoST's train is train + train_covost, in the TSV's order
    assert [r["id"] for r in train] == ["common_voice_de_1000", "common_voice_de_1001", "common_voice_de_1005"]
    assert train[0]["transcript"] == SENTENCES[0] and train[0]["translation"] == "English 0, escaped"
    assert train[0]["voice"] == "speaker0"
    test = covost2.read(root, language="de", split="test", progress=False)
    assert [r["id"] for r in test] == ["common_voice_de_1003", "common_voice_de_1004"]
    (root / "de" / "validated.tsv").write_text("\t".join(HEADER) + "\n")
    with pytest.raises(AdapterError, match=r"row 3: clip 'common_voice_de_1002.mp3' is not in .*validated.tsv"):
        covost2.read(root, language="de", split="dev", progress=False)
    with pytest.raises(FileNotFoundError, match=r"covost_v2.it_en.tsv is missing|no folder it/"):
        covost2.check_layout(root, "it", "dev")
    (root / "de" / "covost_v2.de_en.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"covost_v2.de_en.tsv is missing"):
        covost2.check_layout(root, "de", "dev")


# ----- streaming a split -----------------------------------------------------------------------
def test_iter_examples_streams_the_rows_of_read_examples(tmp_path):
    from speechmerge.data.audio import encode_flac
    from speechmerge.data.io import ROW_GROUP, iter_examples, read_examples, write_split

    rng = np.random.default_rng(0)
    recs = [
        {"id": f"u{i}", "audio": {"bytes": encode_flac((0.1 * rng.standard_normal(800)).astype(np.float32), 16000)},
         "language": "de", "domain": "clean", "transcript": f"t{i}", "translation": "", "voice": "", "split": "train",
         "duration": 0.05}
        for i in range(2 * ROW_GROUP + 5)
    ]  # fmt: skip
    path = tmp_path / "s.parquet"
    write_split(recs, path)
    chunks = list(iter_examples(path))
    assert [len(c) for c in chunks] == [ROW_GROUP, ROW_GROUP, 5]
    flat = [e for c in chunks for e in c]
    whole = read_examples(path)
    assert [e.id for e in flat] == [e.id for e in whole]
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(flat, whole))


def test_feature_file_round_trip(tmp_path):
    import torch

    from speechmerge.training.batching import FeatureFile

    ff = FeatureFile(tmp_path / "f.f32", 3, 4)
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    ff.append(a)
    ff.append(a[:1] + 100)
    assert ff.shape == (3, 3, 4)
    got = ff.index_select(0, torch.tensor([2, 0, 0]))
    assert torch.equal(got, torch.from_numpy(np.stack([a[0] + 100, a[0], a[0]])))
    with pytest.raises(IndexError, match="row 3 of 3"):
        ff.index_select(0, torch.tensor([3]))
    with pytest.raises(ValueError, match=r"rows of shape \(4, 3\)"):
        ff.append(np.zeros((1, 4, 3), dtype=np.float32))
    ff.close()


# ----- datasets on disk (save_to_disk, parquet folders) ----------------------------------------
def test_hf_disk_reads_a_save_to_disk_split(tmp_path):
    from datasets import Dataset

    from speechmerge.data.readers import hf_disk

    rows = hf_rows(tmp_path)
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "cv17" / "de" / "validation"))
    recs = hf_disk.read(tmp_path / "cv17", language="de", split="dev", progress=False)
    assert [r["id"] for r in recs] == [f"common_voice_de_{1000 + t}" for t in range(4)]
    assert [r["transcript"] for r in recs] == [r["sentence"] for r in rows]
    assert [r["voice"] for r in recs] == ["speaker0", "speaker1", "speaker0", "speaker1"]
    assert all(r["translation"] == "" for r in recs) and recs[0]["duration"] == pytest.approx(0.6, abs=0.06)
    assert len(hf_disk.read(tmp_path / "cv17", language="de", split="dev", max_examples=2, progress=False)) == 2
    with pytest.raises(FileNotFoundError, match=r"cv17/de has no split folder test/"):
        hf_disk.check_layout(tmp_path / "cv17", "de", "test")
    with pytest.raises(FileNotFoundError, match=r"none of the folders \['fr', 'fr_en', 'fr_fr'\].*found: \['de'\]"):
        hf_disk.check_layout(tmp_path / "cv17", "fr", "dev")


def test_hf_disk_reads_parquet_files_with_covost_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from speechmerge.data.readers import hf_disk

    rows = hf_rows(tmp_path, n=6, translation=True)
    folder = tmp_path / "covost" / "de_en" / "train"  # the hub's parquet conversion: <config>/<split>/NNNN.parquet
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows[:4]), folder / "0000.parquet")
    pq.write_table(pa.Table.from_pylist(rows[4:]), folder / "0001.parquet")
    recs = hf_disk.read(tmp_path / "covost", language="de", split="train", progress=False)
    assert [r["translation"] for r in recs] == [f"English {t}" for t in range(6)]
    # hours: drawn by seed from the audio headers, the same draw for the same seed
    a = hf_disk.read(tmp_path / "covost", language="de", split="train", hours=1.5 / 3600, seed=1, progress=False)
    b = hf_disk.read(tmp_path / "covost", language="de", split="train", hours=1.5 / 3600, seed=1, progress=False)
    assert [r["id"] for r in a] == [r["id"] for r in b] and sum(r["duration"] for r in a) >= 1.5
    # a clip that cannot be decoded: the folder and row, or skipped
    rows[1]["audio"] = {"bytes": b"not audio", "path": "x.mp3"}
    pq.write_table(pa.Table.from_pylist(rows[:4]), folder / "0000.parquet")
    with pytest.raises(Exception, match=r"de_en/train row 1"):
        hf_disk.read(tmp_path / "covost", language="de", split="train", progress=False)
    skipped = []
    recs = hf_disk.read(
        tmp_path / "covost", language="de", split="train", on_bad_audio="skip", skipped=skipped, progress=False
    )
    assert len(recs) == 5 and [s["row"] for s in skipped] == [1]


def test_hf_disk_names_columns_it_does_not_know(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from speechmerge.data.readers import hf_disk

    folder = tmp_path / "x" / "de" / "test"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"audio": [{"bytes": b"x", "path": "a"}], "text": ["hallo"]}), folder / "0000.parquet")
    with pytest.raises(AdapterError, match=r"x/de/test: columns \['audio', 'text'\] are not CoVoST 2"):
        hf_disk.read(tmp_path / "x", language="de", split="test", progress=False)


# ----- speaker-disjoint splits ---------------------------------------------------------------
def test_speaker_disjoint_splits_leave_out_later_speakers(tmp_path):
    from speechmerge.data.readers.base import speakers_to_exclude

    who = ["a", "b", "c", "d", "a", "e", "f", "g", "b"]  # train t=0..2, dev 3..5, test 6..8
    root = make_release(tmp_path / "cv", speakers=who)
    reader = get_reader("common_voice")
    assert reader.speakers(root, "de", "dev") == {"d", "a", "e"}
    assert speakers_to_exclude(reader, root, "de", "train") == {"d", "a", "e", "f", "g", "b"}
    train = cv.read(root, language="de", split="train", exclude_speakers={"d", "a", "e", "f", "g", "b"}, progress=False)
    assert [r["voice"] for r in train] == ["c"]
    assert speakers_to_exclude(reader, root, "de", "test") == set()
    with pytest.raises(ValueError, match="corpus 'fleurs' has no speaker ids"):
        speakers_to_exclude(get_reader("fleurs"), root, "de", "train")


def test_plan_speaker_disjoint(tmp_path):
    root = make_release(tmp_path / "cv")
    plan = build_plan(_peft_from(root, speakers="disjoint"))
    assert {d.get("speakers") for (e, _, s), d in plan.datasets.items() if e == "peft"} == {"disjoint"}
    fl = make_fleurs(tmp_path / "fleurs")
    with pytest.raises(PlanError, match=r"'experiments.peft.data.speakers': fleurs has no speaker ids"):
        build_plan(_peft_from(fl, source="fleurs", speakers="disjoint"))
    with pytest.raises(PlanError, match=r"speakers is not used by data source 'synth'"):
        cfg = _peft_from(root, source="synth", speakers="disjoint")
        del cfg["experiments"]["peft"]["data"]["root"]
        build_plan(cfg)


def test_index_files_are_the_inputs_of_a_split(tmp_path):
    """The files that list a split (not each clip) are its job's inputs: editing one rebuilds it."""
    cvroot = make_release(tmp_path / "cv")
    assert get_reader("common_voice").index_files(cvroot, "de", "dev") == [cvroot / "de" / "dev.tsv"]
    co = make_covost(tmp_path / "covost")
    assert get_reader("covost2").index_files(co, "de", "train") == [
        co / "de" / "covost_v2.de_en.tsv",
        co / "de" / "validated.tsv",
    ]
    fl = make_fleurs(tmp_path / "fleurs")
    got = get_reader("fleurs").index_files(fl, "de", "test")
    assert got[0] == fl / "de_de" / "test.tsv" and fl / "en_us" / "dev.tsv" in got
    pq_dir = tmp_path / "hf" / "de" / "test"
    pq_dir.mkdir(parents=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(hf_rows(tmp_path / "src", n=1)), pq_dir / "0000.parquet")
    assert get_reader("hf_disk").index_files(tmp_path / "hf", "de", "test") == [pq_dir / "0000.parquet"]


def test_covost_translations_in_their_own_folder(tmp_path):
    from speechmerge.data.readers import covost2

    root = make_covost(tmp_path / "cv4", translations=tmp_path / "covost2")
    with pytest.raises(FileNotFoundError, match=r"cv4/de/covost_v2.de_en.tsv is missing"):
        covost2.check_layout(root, "de", "train")
    recs = covost2.read(root, language="de", split="test", translations=tmp_path / "covost2", progress=False)
    assert [r["translation"] for r in recs] == ["English 3, escaped", "English 4, escaped"]
    assert get_reader("covost2").options == ("translations",)
    with pytest.raises(PlanError, match=r"translations is not used by data source 'common_voice'"):
        build_plan(_peft_from(make_release(tmp_path / "cv"), translations=str(tmp_path / "covost2")))
