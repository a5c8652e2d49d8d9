"""CoVoST 2 (X→en) as released: its translation TSV joined with the Common Voice release 4 clips
it was built on. The layout fairseq's CoVoST preparation (``examples/speech_to_text/
prep_covost_data.py``) unpacks, one folder per source language::

    <root>/<locale>/covost_v2.<locale>_en.tsv    (path, translation, split, ...; from covost_v2.<locale>_en.tsv.tar.gz)
    <root>/<locale>/validated.tsv                (Common Voice 4: client_id, path, sentence, ...)
    <root>/<locale>/clips/<path>                 (MP3)

Rows are joined on ``path`` (the clip's file name): the transcript is Common Voice's
``sentence``, the translation CoVoST's English ``translation``, the speaker ``client_id``. Our
train split is CoVoST's ``train`` plus ``train_covost`` (CoVoST's extension of Common Voice's
train set); dev and test are CoVoST's ``dev`` and ``test``. The TSVs are read unquoted with ``\\``
as escape character, as fairseq reads them. Rows keep the CoVoST TSV's order; ids are the clip's
file name without extension.
"""

from __future__ import annotations

import csv
from pathlib import Path

from tqdm.auto import tqdm

from speechmerge.data.adapters import AdapterError, _record
from speechmerge.data.audio import AudioError, decode_audio
from speechmerge.data.readers.base import LocalReader, draw_hours, register
from speechmerge.data.readers.common_voice import LOCALES

SPLIT_VALUES = {"train": ("train", "train_covost"), "dev": ("dev",), "test": ("test",)}


def locale_dir(root: Path, language: str) -> Path:
    return Path(root) / LOCALES.get(language, language)


def covost_tsv(root: Path, language: str) -> Path:
    loc = locale_dir(root, language)
    return loc / f"covost_v2.{loc.name}_en.tsv"


def check_layout(root: Path, language: str, split: str) -> None:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CoVoST 2 root {root} is not a folder")
    if split not in SPLIT_VALUES:
        raise ValueError(f"CoVoST 2: unknown split {split!r}; expected one of {sorted(SPLIT_VALUES)}")
    loc = locale_dir(root, language)
    if not loc.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"CoVoST 2 root {root} has no folder {loc.name}/ for language {language!r}; found: {found}"
        )
    for need in (covost_tsv(root, language), loc / "validated.tsv", loc / "clips"):
        if not need.exists():
            raise FileNotFoundError(f"CoVoST 2 under {root}: {need} is missing")


def _table(path: Path, need: tuple[str, ...]) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise AdapterError(f"{path}: no column(s) {missing} (header: {reader.fieldnames})")
        return list(reader)


def read(
    root: str | Path,
    *,
    language: str,
    split: str,
    subset: str = "",
    domain: str = "clean",
    max_examples: int | None = None,
    hours: float | None = None,
    seed: int = 0,
    on_bad_audio: str = "error",
    skipped: list | None = None,
    progress: bool = True,
) -> list[dict]:
    """Records of one split (CoVoST's order; the first ``max_examples``, or ``hours`` drawn by
    ``seed``); bad audio as in ``common_voice.read``."""
    if on_bad_audio not in ("error", "skip"):
        raise ValueError(f"on_bad_audio must be error or skip, got {on_bad_audio!r}")
    root = Path(root)
    check_layout(root, language, split)
    loc = locale_dir(root, language)
    tsv = covost_tsv(root, language)
    cv = {r["path"]: r for r in _table(loc / "validated.tsv", ("client_id", "path", "sentence"))}
    rows = []
    for i, row in enumerate(_table(tsv, ("path", "translation", "split"))):
        if row["split"] not in SPLIT_VALUES[split]:
            continue
        if row["path"] not in cv:
            raise AdapterError(
                f"{tsv} row {i + 1}: clip {row['path']!r} is not in {loc / 'validated.tsv'} (Common Voice 4?)"
            )
        rows.append((i, {**cv[row["path"]], "translation": row["translation"]}))
    if max_examples is not None:
        if len(rows) < int(max_examples):
            raise AdapterError(
                f"{tsv}: {max_examples} utterances asked for (data.{split}.sentences) but {split} has {len(rows)}"
            )
        rows = rows[: int(max_examples)]
    if hours is not None:
        present = [(i, r) for i, r in rows if (loc / "clips" / r["path"]).is_file()]
        for i, r in rows:
            if not (loc / "clips" / r["path"]).is_file():
                if on_bad_audio != "skip":
                    raise FileNotFoundError(f"{tsv} row {i + 1}: clip not found: {loc / 'clips' / r['path']}")
                if skipped is not None:
                    skipped.append(
                        {
                            "id": Path(r["path"]).stem,
                            "file": str(loc / "clips" / r["path"]),
                            "row": i + 1,
                            "reason": "clip not found",
                        }
                    )
        keep = draw_hours(
            [loc / "clips" / r["path"] for _, r in present], hours, seed, where=f"{tsv} (data.{split}.hours)"
        )
        rows = [present[k] for k in keep]
    records = []
    for i, row in tqdm(rows, desc=f"covost2 {loc.name} {split}", unit="utt", disable=not progress):
        where = f"{tsv} row {i + 1}"
        audio = loc / "clips" / row["path"]
        rid = Path(row["path"]).stem
        transcript, translation = row["sentence"].strip(), row["translation"].strip()
        if not transcript or not translation:
            raise AdapterError(f"{where}: empty {'sentence' if not transcript else 'translation'}")
        try:
            if not audio.is_file():
                raise FileNotFoundError(f"{where}: clip not found: {audio}")
            wave = decode_audio(str(audio), what=f"{audio} ({where})")
        except (FileNotFoundError, AudioError) as err:
            if on_bad_audio != "skip":
                raise
            if skipped is not None:
                skipped.append({"id": rid, "file": str(audio), "row": i + 1, "reason": str(err)})
            continue
        records.append(
            _record(
                rid=rid,
                wave=wave,
                language=language,
                domain=domain,
                transcript=transcript,
                translation=translation,
                voice=row["client_id"].strip(),
                split=split,
            )
        )
    return records


READER = register(
    LocalReader(
        name="covost2",
        layout="<root>/<locale>/covost_v2.<locale>_en.tsv, validated.tsv and clips/ (Common Voice 4)",
        documented_at="fairseq examples/speech_to_text/prep_covost_data.py (the CoVoST class: join on path, train = train + train_covost)",
        check_layout=check_layout,
        read=read,
    )
)
