"""CoVoST 2 (X→en) as released: its translation TSV joined with the Common Voice release 4 clips
it was built on. The layout fairseq's CoVoST preparation (``examples/speech_to_text/
prep_covost_data.py``) unpacks, one folder per source language::

    <root>/<locale>/covost_v2.<locale>_en.tsv    (path, translation, split, ...; from covost_v2.<locale>_en.tsv.tar.gz)
                                                 or <translations>/covost_v2.<locale>_en.tsv (data.translations)
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
from typing import Iterator

from tqdm.auto import tqdm

from speechmerge.data.adapters import AdapterError, _record, check_on_bad_audio, decode_or_skip, take_first
from speechmerge.data.readers.base import LocalReader, draw_present_hours, register
from speechmerge.data.readers.common_voice import LOCALES

SPLIT_VALUES = {"train": ("train", "train_covost"), "dev": ("dev",), "test": ("test",)}


def locale_dir(root: Path, language: str) -> Path:
    return Path(root) / LOCALES.get(language, language)


def covost_tsv(root: Path, language: str, translations: str | Path | None = None) -> Path:
    """CoVoST's TSV of one language: in ``translations`` (data.translations: the folder the
    released covost_v2.<locale>_en.tsv.tar.gz files were unpacked into) or else beside the clips."""
    loc = locale_dir(root, language)
    return (Path(translations) if translations else loc) / f"covost_v2.{loc.name}_en.tsv"


def check_layout(root: Path, language: str, split: str, translations: str | Path | None = None) -> None:
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
    if translations and not Path(translations).is_dir():
        raise FileNotFoundError(f"CoVoST 2 translations folder {translations} is not a folder")
    for need in (covost_tsv(root, language, translations), loc / "validated.tsv", loc / "clips"):
        if not need.exists():
            raise FileNotFoundError(f"CoVoST 2 under {root}: {need} is missing")


def _table(path: Path, need: tuple[str, ...], *, keep: set[str] | None = None) -> list[dict]:
    """The TSV's rows (header required, ``need`` columns checked); with ``keep``, only the rows
    whose ``path`` is in it."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise AdapterError(f"{path}: no column(s) {missing} (header: {reader.fieldnames})")
        return [row for row in reader if keep is None or row.get("path") in keep]


def iter_records(
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
    exclude_speakers: set[str] | None = None,
    translations: str | Path | None = None,
    progress: bool = True,
) -> Iterator[dict]:
    """Records of one split (CoVoST's order; the first ``max_examples``, or ``hours`` drawn by
    ``seed``); bad audio as in ``common_voice.read``."""
    check_on_bad_audio(on_bad_audio)
    root = Path(root)
    check_layout(root, language, split, translations)
    loc = locale_dir(root, language)
    tsv = covost_tsv(root, language, translations)
    wanted = [(i, row) for i, row in enumerate(_table(tsv, ("path", "translation", "split")))]
    wanted = [(i, row) for i, row in wanted if row["split"] in SPLIT_VALUES[split]]
    paths = {row["path"] for _, row in wanted}
    # only the Common Voice rows this split names (validated.tsv holds the whole release)
    cv = {
        r["path"]: {"path": r["path"], "client_id": r["client_id"], "sentence": r["sentence"]}
        for r in _table(loc / "validated.tsv", ("client_id", "path", "sentence"), keep=paths)
    }
    rows = []
    for i, row in wanted:
        if row["path"] not in cv:
            raise AdapterError(
                f"{tsv} row {i + 1}: clip {row['path']!r} is not in {loc / 'validated.tsv'} (Common Voice 4?)"
            )
        rows.append((i, {**cv[row["path"]], "translation": row["translation"]}))
    if exclude_speakers:  # data.speakers: disjoint (speakers of the later splits left out)
        rows = [(i, r) for i, r in rows if r["client_id"].strip() not in exclude_speakers]
    rows = take_first(rows, max_examples, source=tsv, split=split, have=f"{split} has {{n}}")

    def clip_of(row: dict) -> Path:
        return loc / "clips" / row["path"]

    if hours is not None:  # drawn among the clips that exist (a missing one: error, or skipped)
        rows = draw_present_hours(
            rows,
            clip_of,
            hours=hours,
            seed=seed,
            where=f"{tsv} (data.{split}.hours)",
            where_of=lambda i: f"{tsv} row {i + 1}",
            on_bad_audio=on_bad_audio,
            skipped=skipped,
        )
    for i, row in tqdm(rows, desc=f"covost2 {loc.name} {split}", unit="utt", disable=not progress):
        where = f"{tsv} row {i + 1}"
        audio = clip_of(row)
        rid = Path(row["path"]).stem
        transcript, translation = row["sentence"].strip(), row["translation"].strip()
        if not transcript or not translation:
            raise AdapterError(f"{where}: empty {'sentence' if not transcript else 'translation'}")
        wave = decode_or_skip(
            audio,
            where=where,
            missing=f"{where}: clip not found: {audio}",
            on_bad_audio=on_bad_audio,
            skipped=skipped,
            entry={"id": rid, "file": str(audio), "row": i + 1},
        )
        if wave is None:
            continue
        yield (
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


def index_files(root: str | Path, language: str, split: str, translations: str | Path | None = None) -> list[Path]:
    """CoVoST's TSV and the Common Voice ``validated.tsv`` it is joined with."""
    return [covost_tsv(Path(root), language, translations), locale_dir(Path(root), language) / "validated.tsv"]


def speakers(root: str | Path, language: str, split: str, translations: str | Path | None = None) -> set[str]:
    """The speakers (Common Voice ``client_id``) of one CoVoST split."""
    loc = locale_dir(Path(root), language)
    paths = {
        r["path"]
        for r in _table(covost_tsv(root, language, translations), ("path", "split"))
        if r["split"] in SPLIT_VALUES[split]
    }
    return {r["client_id"].strip() for r in _table(loc / "validated.tsv", ("client_id", "path"), keep=paths)}


def read(root: str | Path, **kwargs) -> list[dict]:
    """``iter_records`` as a list (a split at once; jobs stream ``iter_records``)."""
    return list(iter_records(root, **kwargs))


READER = register(
    LocalReader(
        name="covost2",
        layout="<root>/<locale>/covost_v2.<locale>_en.tsv, validated.tsv and clips/ (Common Voice 4)",
        documented_at="fairseq examples/speech_to_text/prep_covost_data.py (the CoVoST class: join on path, train = train + train_covost)",
        check_layout=check_layout,
        index_files=index_files,
        options=("translations",),
        records=iter_records,
        speakers=speakers,
    )
)
