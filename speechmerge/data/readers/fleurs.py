"""FLEURS as Google releases it (the ``google/fleurs`` dataset repository, one folder per
language config)::

    <root>/<config>/train.tsv, dev.tsv, test.tsv
    <root>/<config>/audio/train.tar.gz, dev.tar.gz, test.tar.gz     (16 kHz WAV files)
    or those archives unpacked: <root>/<config>/audio/<split>/<file_name>

The split TSVs have no header; each line has seven tab-separated fields: sentence id, audio file
name, raw transcription, normalised transcription, a character/phoneme field, number of samples
and gender. The transcript is the raw transcription (cased, punctuated, as Whisper writes). The
same sentence is read by several speakers (the file names differ); FLEURS has no speaker ids.
FLEURS is n-way parallel: where ``<root>/en_us/`` is there too, a row's translation is the
English raw transcription of the same sentence id (any split), for X→en speech translation.
Audio is read from the unpacked folder when it exists, else the wanted members of the archive
are unpacked into a temporary folder first (removed afterwards). Ids are ``fleurs-<config>-<file name without extension>``.
"""

from __future__ import annotations

import contextlib
import csv
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from speechmerge.data.adapters import (
    _FLEURS_CONFIGS,
    AdapterError,
    _record,
    check_on_bad_audio,
    decode_or_skip,
    take_first,
)
from speechmerge.data.readers.base import LocalReader, draw_hours, register

SPLITS = ("train", "dev", "test")
FIELDS = ("sentence_id", "file_name", "raw_transcription", "transcription", "characters", "num_samples", "gender")
ENGLISH = "en_us"


def config_dir(root: Path, language: str) -> Path:
    if language not in _FLEURS_CONFIGS:
        raise ValueError(f"FLEURS: no config known for language {language!r}; known: {sorted(_FLEURS_CONFIGS)}")
    return Path(root) / _FLEURS_CONFIGS[language]


def check_layout(root: Path, language: str, split: str) -> None:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"FLEURS root {root} is not a folder")
    if split not in SPLITS:
        raise ValueError(f"FLEURS: unknown split {split!r}; expected one of {list(SPLITS)}")
    cfg = config_dir(root, language)
    if not cfg.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"FLEURS root {root} has no folder {cfg.name}/ for language {language!r}; found: {found}"
        )
    if not (cfg / f"{split}.tsv").is_file():
        raise FileNotFoundError(f"FLEURS release under {root}: {cfg / f'{split}.tsv'} is missing")
    if not (cfg / "audio" / split).is_dir() and not (cfg / "audio" / f"{split}.tar.gz").is_file():
        raise FileNotFoundError(f"FLEURS release under {root}: neither {cfg / 'audio' / split}/ nor {split}.tar.gz")


def _rows(tsv: Path) -> list[dict]:
    rows = []
    with open(tsv, encoding="utf-8", newline="") as fh:
        for n, fields in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not fields:
                continue
            if len(fields) != len(FIELDS):
                raise AdapterError(f"{tsv} line {n}: {len(fields)} fields, a FLEURS TSV line has {len(FIELDS)}")
            rows.append({**dict(zip(FIELDS, fields)), "line": n})
    return rows


def english_by_sentence(root: Path) -> dict[str, str]:
    """Sentence id -> English raw transcription from ``<root>/en_us/*.tsv`` (empty without it)."""
    out: dict[str, str] = {}
    for split in SPLITS:
        tsv = Path(root) / ENGLISH / f"{split}.tsv"
        if tsv.is_file():
            for row in _rows(tsv):
                out.setdefault(row["sentence_id"], row["raw_transcription"].strip())
    return out


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
    progress: bool = True,
) -> Iterator[dict]:
    """Records of one split in the TSV's order (the first ``max_examples``; ``hours`` draws by
    ``seed`` using the TSV's sample counts); bad audio as in ``common_voice.read``."""
    check_on_bad_audio(on_bad_audio)
    root = Path(root)
    check_layout(root, language, split)
    cfg = config_dir(root, language)
    tsv = cfg / f"{split}.tsv"
    rows = take_first(_rows(tsv), max_examples, source=tsv, split=split)
    if hours is not None:  # durations from the TSV's sample counts (16 kHz)
        keep = draw_hours(
            lambda i: int(rows[i]["num_samples"]) / 16000, len(rows), hours, seed, where=f"{tsv} (data.{split}.hours)"
        )
        rows = [rows[i] for i in keep]
    english = english_by_sentence(root) if language != "en" else {}
    seen = set()
    with _audio_source(cfg, split, {r["file_name"] for r in rows}) as audio:
        for row in tqdm(rows, desc=f"fleurs {cfg.name} {split}", unit="utt", disable=not progress):
            where = f"{tsv} line {row['line']}"
            transcript = row["raw_transcription"].strip()
            if not transcript:
                raise AdapterError(f"{where}: empty transcription")
            rid = f"fleurs-{cfg.name}-{Path(row['file_name']).stem}"
            if rid in seen:
                raise AdapterError(f"{where}: audio file {row['file_name']!r} listed twice")
            seen.add(rid)
            wave = decode_or_skip(
                audio(row["file_name"]),
                where=where,
                missing=f"{where}: audio file {row['file_name']} not found in {cfg / 'audio'}",
                on_bad_audio=on_bad_audio,
                skipped=skipped,
                entry={"id": rid, "file": row["file_name"], "row": row["line"]},
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
                    translation=english.get(row["sentence_id"], ""),
                    voice="",
                    split=split,
                )
            )


@contextlib.contextmanager
def _audio_source(cfg: Path, split: str, wanted: set[str]):
    """A function file name -> path (existing or not): the unpacked folder, else the wanted
    members of the archive unpacked one by one into a temporary folder (removed afterwards), so
    memory stays flat."""
    folder = cfg / "audio" / split
    archive = cfg / "audio" / f"{split}.tar.gz"
    with contextlib.ExitStack() as stack:
        if not folder.is_dir():
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleurs-")))
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    name = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and name in wanted:
                        with tar.extractfile(member) as src, open(folder / name, "wb") as dst:
                            shutil.copyfileobj(src, dst)

        def path_of(name: str) -> Path:
            return folder / name

        yield path_of


def index_files(root: str | Path, language: str, split: str) -> list[Path]:
    """The split's TSV, and the English TSVs its translations come from where they are there."""
    root = Path(root)
    english = [root / ENGLISH / f"{s}.tsv" for s in SPLITS] if language != "en" else []
    return [config_dir(root, language) / f"{split}.tsv", *[p for p in english if p.is_file()]]


def read(root: str | Path, **kwargs) -> list[dict]:
    """``iter_records`` as a list (a split at once; jobs stream ``iter_records``)."""
    return list(iter_records(root, **kwargs))


READER = register(
    LocalReader(
        name="fleurs",
        layout="<root>/<config>/{train,dev,test}.tsv (7 fields, no header) and <root>/<config>/audio/<split>.tar.gz or audio/<split>/",
        documented_at="the google/fleurs dataset repository's loading script fleurs.py (data/<config>/<split>.tsv, data/<config>/audio/<split>.tar.gz)",
        check_layout=check_layout,
        index_files=index_files,
        records=iter_records,
    )
)
