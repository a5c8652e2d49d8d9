"""Common Voice as Mozilla releases it (any release, one locale per folder)::

    <root>/<locale>/train.tsv, dev.tsv, test.tsv, validated.tsv, ...
    <root>/<locale>/clips/<path>                      (MP3, 48 kHz in recent releases)

Each split TSV has a header; the reader needs ``client_id`` (the speaker), ``path`` (the clip's
file name under ``clips/``) and ``sentence`` (the transcript); other columns (``up_votes``,
``age``, ``gender``, ``accents``, ``locale``, ``segment``, ...) are ignored. Fields are not quoted
(a sentence may contain ``"``). Our splits train / dev / test are the release's ``train.tsv`` /
``dev.tsv`` / ``test.tsv``, so no utterance is in two splits. The locale folder is the
language's Common Voice code (``sv-SE`` for ``sv``, ``zh-CN`` for ``zh``; otherwise the code
itself). Ids are the clip's file name without extension (unique in a release).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from speechmerge.data.adapters import AdapterError, _record, check_on_bad_audio, decode_or_skip, take_first
from speechmerge.data.readers.base import LocalReader, draw_present_hours, register

SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
REQUIRED = ("client_id", "path", "sentence")
# project language -> Common Voice locale, where the two differ
LOCALES = {"sv": "sv-SE", "zh": "zh-CN"}


def locale_dir(root: Path, language: str) -> Path:
    return Path(root) / LOCALES.get(language, language)


def _rows(tsv: Path) -> list[dict]:
    """The rows of a split TSV (header checked for the columns the reader needs)."""
    with open(tsv, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise AdapterError(
                f"{tsv}: no column(s) {missing} (header: {reader.fieldnames}); is this a Common Voice TSV?"
            )
        return list(reader)


def check_layout(root: Path, language: str, split: str) -> None:
    """The split's TSV and the clips folder exist, or an error naming what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Common Voice root {root} is not a folder")
    loc = locale_dir(root, language)
    if not loc.is_dir():
        found = sorted(p.name for p in root.iterdir() if (p / "clips").is_dir())
        raise FileNotFoundError(
            f"Common Voice root {root} has no folder {loc.name}/ for language {language!r}; locales found: {found}"
        )
    if split not in SPLIT_FILES:
        raise ValueError(f"Common Voice: unknown split {split!r}; expected one of {sorted(SPLIT_FILES)}")
    for need in (loc / SPLIT_FILES[split], loc / "clips"):
        if not need.exists():
            raise FileNotFoundError(f"Common Voice release under {root}: {need} is missing")


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
    progress: bool = True,
) -> Iterator[dict]:
    """Records of one split: the TSV's rows in order, the first ``max_examples`` of them or, with
    ``hours``, those drawn at random (``seed``) until their duration reaches it. A clip that is
    missing, undecodable, empty or silent is an error naming file and row, or with
    ``on_bad_audio="skip"`` left out and appended to ``skipped`` (``{"id", "file", "row", "reason"}``)."""
    check_on_bad_audio(on_bad_audio)
    check_layout(Path(root), language, split)
    loc = locale_dir(Path(root), language)
    tsv = loc / SPLIT_FILES[split]
    numbered = list(enumerate(_rows(tsv)))  # (row index, row)
    if exclude_speakers:  # data.speakers: disjoint (speakers of the later splits left out)
        numbered = [(i, r) for i, r in numbered if (r.get("client_id") or "").strip() not in exclude_speakers]
    numbered = take_first(numbered, max_examples, source=tsv, split=split)

    def clip_of(row: dict) -> Path:
        return loc / "clips" / (row.get("path") or "").strip()

    if hours is not None:  # drawn among the clips that exist (a missing one: error, or skipped)
        numbered = draw_present_hours(
            numbered,
            clip_of,
            hours=hours,
            seed=seed,
            where=f"{tsv} (data.{split}.hours)",
            where_of=lambda i: f"{tsv} row {i + 1} (line {i + 2})",
            on_bad_audio=on_bad_audio,
            skipped=skipped,
        )
    seen = {}
    for i, row in tqdm(numbered, desc=f"common voice {loc.name} {split}", unit="utt", disable=not progress):
        where = f"{tsv} row {i + 1} (line {i + 2})"
        clip = (row.get("path") or "").strip()
        transcript = (row.get("sentence") or "").strip()
        if not clip:
            raise AdapterError(f"{where}: empty path")
        if not transcript:
            raise AdapterError(f"{where}: empty sentence")
        audio = clip_of(row)
        rid = Path(clip).stem
        if rid in seen:
            raise AdapterError(f"{where}: clip {clip!r} is also row {seen[rid] + 1}")
        seen[rid] = i
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
                translation="",
                voice=(row.get("client_id") or "").strip(),
                split=split,
            )
        )


def index_files(root: str | Path, language: str, split: str) -> list[Path]:
    """The split's TSV (the clips it names are not tracked one by one)."""
    return [locale_dir(Path(root), language) / SPLIT_FILES[split]]


def speakers(root: str | Path, language: str, split: str) -> set[str]:
    """The speakers (``client_id``) of one split's TSV."""
    rows = _rows(locale_dir(Path(root), language) / SPLIT_FILES[split])
    return {who for r in rows if (who := (r.get("client_id") or "").strip())}


def read(root: str | Path, **kwargs) -> list[dict]:
    """``iter_records`` as a list (a split at once; jobs stream ``iter_records``)."""
    return list(iter_records(root, **kwargs))


READER = register(
    LocalReader(
        name="common_voice",
        layout="<root>/<locale>/{train,dev,test}.tsv (client_id, path, sentence, ...) and <root>/<locale>/clips/",
        documented_at=(
            "the release's own layout, as read by the Hugging Face loading script "
            "(huggingface/datasets: datasets/common_voice/common_voice.py) and torchaudio.datasets.COMMONVOICE"
        ),
        check_layout=check_layout,
        index_files=index_files,
        records=iter_records,
        speakers=speakers,
    )
)
