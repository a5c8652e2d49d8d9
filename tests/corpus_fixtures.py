"""Corpora in their released on-disk layouts, built inside tests: a Common Voice release (real MP3
clips, the release's TSV header), FLEURS (header-less TSVs, WAVs in tar.gz archives) and CoVoST 2
(its translation TSV beside a Common Voice 4 folder)."""

import tarfile

import numpy as np
import soundfile as sf

# the header of a Common Voice 17.0 split TSV
HEADER = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
          "gender", "accents", "variant", "locale", "segment"]  # fmt: skip
SENTENCES = ['Guten Morgen, wie geht "es" dir?', "Das Wetter ist schön.", "Ich lese ein Buch.", "Wo ist der Bahnhof?"]


def make_release(root, locale="de", splits=("train", "dev", "test"), n=3, seconds=(0.6, 0.9, 1.2, 0.7), speakers=None):
    """``root/<locale>/{split}.tsv`` + ``clips/*.mp3`` (48 kHz, as recent releases); clip t is
    read by ``speakers[t]`` (default ``speaker{t % 2}``)."""
    loc = root / locale
    (loc / "clips").mkdir(parents=True)
    t = 0
    for split in splits:
        lines = ["\t".join(HEADER)]
        for i in range(n):
            name = f"common_voice_{locale}_{1000 + t}.mp3"
            samples = int(48000 * seconds[t % len(seconds)])
            wave = 0.3 * np.sin(2 * np.pi * (220 + 40 * t) * np.arange(samples) / 48000)
            sf.write(loc / "clips" / name, wave.astype(np.float32), 48000, format="MP3")
            row = [speakers[t] if speakers else f"speaker{t % 2}", name, f"s{t}", SENTENCES[t % len(SENTENCES)], "", "2", "0", "", "", "", "",
                   locale, ""]  # fmt: skip
            lines.append("\t".join(row))
            t += 1
        (loc / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def make_fleurs(root, config="de_de", splits=("train", "dev", "test"), n=2, packed=True, english=True):
    """``root/<config>/{split}.tsv`` (seven fields, no header) + ``audio/{split}.tar.gz`` of WAVs."""
    configs = [config] + (["en_us"] if english else [])
    for cfg in configs:
        d = root / cfg
        (d / "audio").mkdir(parents=True)
        for s_i, split in enumerate(splits):
            lines, files = [], []
            for i in range(n):
                sid = str(100 + 10 * s_i + i)
                name = f"{cfg}-{sid}.wav"
                samples = 16000 * (i + 1) // 2
                wave = 0.3 * np.sin(2 * np.pi * 300 * np.arange(samples) / 16000).astype(np.float32)
                text = f"Satz {sid}, gelesen." if cfg != "en_us" else f"Sentence {sid}, read."
                lines.append("\t".join([sid, name, text, text.lower(), "s a t z", str(samples), "FEMALE"]))
                out = d / "audio" / split
                out.mkdir(exist_ok=True)
                sf.write(out / name, wave, 16000)
                files.append(out / name)
            (d / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
            if packed:
                with tarfile.open(d / "audio" / f"{split}.tar.gz", "w:gz") as tar:
                    for f in files:
                        tar.add(f, arcname=f"{split}/{f.name}")
                for f in files:
                    f.unlink()
                (d / "audio" / split).rmdir()
    return root


def make_covost(root, locale="de", translations=None):
    """A Common Voice 4 folder (validated.tsv, clips/) with the CoVoST 2 TSV beside it, or in the
    folder ``translations`` (as unpacked from the release's tar.gz files)."""
    make_release(root, locale=locale, splits=("validated",), n=6)
    loc = root / locale
    rows = ["path\tsentence\ttranslation\tclient_id\tsplit"]
    splits = ["train", "train_covost", "dev", "test", "test", "train"]
    for t, split in enumerate(splits):
        rows.append(f"common_voice_{locale}_{1000 + t}.mp3\tx\tEnglish {t}\\, escaped\tspeaker{t % 2}\t{split}")
    where = loc if translations is None else translations
    where.mkdir(parents=True, exist_ok=True)
    (where / f"covost_v2.{locale}_en.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def hf_rows(root, locale="de", n=4, translation=False):
    """Rows as the hub's Common Voice (or, with ``translation``, CoVoST 2) datasets hold them:
    ``audio`` is ``{"bytes": <MP3>, "path": <file name>}``."""
    clips = make_release(root / "clips-src", locale=locale, splits=("validated",), n=n)
    rows = []
    for t in range(n):
        name = f"common_voice_{locale}_{1000 + t}.mp3"
        row = {
            "client_id": f"speaker{t % 2}",
            "path": name,
            "audio": {"bytes": (clips / locale / "clips" / name).read_bytes(), "path": name},
            "sentence": SENTENCES[t % len(SENTENCES)],
        }
        if translation:
            row["translation"] = f"English {t}"
        rows.append(row)
    return rows


def make_manifests(root, subsets, n=3, seconds=(0.6, 0.9, 1.2)):
    """Manifest TSVs (``audio``, ``transcript``, ``language``) of real MP3 clips, one per
    (subset, split): ``subsets`` maps a subset to (language, splits). Returns
    {subset: {split: TSV path}}, the shape of ``data.manifests``."""
    clips = root / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    out = {}
    for s_i, (subset, (language, splits)) in enumerate(subsets.items()):
        out[subset] = {}
        for split in splits:
            lines = ["audio\ttranscript\tlanguage"]
            for i in range(n):
                name = f"{subset}-{split}-{i}.mp3"
                samples = int(16000 * seconds[i % len(seconds)])
                wave = 0.3 * np.sin(2 * np.pi * (200 + 30 * i + 7 * s_i) * np.arange(samples) / 16000)
                sf.write(clips / name, wave.astype(np.float32), 16000, format="MP3")
                lines.append(f"clips/{name}\t{SENTENCES[(i + s_i) % len(SENTENCES)]}\t{language}")
            tsv = root / f"{subset}-{split}.tsv"
            tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
            out[subset][split] = str(tsv)
    return out
