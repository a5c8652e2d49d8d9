"""One dataset split = one parquet file, readable as a Hugging Face ``datasets.Dataset``.

Columns (``COLUMNS``): id, audio ({"bytes": FLAC, "path": None}, i.e. ``Audio(decode=False)``),
language, domain, transcript, translation (English), voice, split, duration (seconds).
Audio is decoded with soundfile (``decode_audio``), never through torchcodec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from speechmerge.data.audio import decode_audio
from speechmerge.utils import atomic_path

COLUMNS = ("id", "audio", "language", "domain", "transcript", "translation", "voice", "split", "duration")


def _features():
    from datasets import Audio, Features, Value

    return Features({
        "id": Value("string"),
        "audio": Audio(sampling_rate=16_000, decode=False),
        "language": Value("string"),
        "domain": Value("string"),
        "transcript": Value("string"),
        "translation": Value("string"),
        "voice": Value("string"),
        "split": Value("string"),
        "duration": Value("float32"),
    })


def write_split(records: Iterable[Mapping], path: str | os.PathLike) -> int:
    """Write records (dicts with ``COLUMNS``; audio as FLAC bytes or {"bytes":..}) atomically."""
    from datasets import Dataset

    rows = {c: [] for c in COLUMNS}
    for i, rec in enumerate(records):
        missing = [c for c in COLUMNS if c not in rec]
        if missing:
            raise KeyError(f"{path}: record {i} ({rec.get('id', '?')}) lacks columns {missing}")
        for c in COLUMNS:
            v = rec[c]
            if c == "audio" and isinstance(v, (bytes, bytearray)):
                v = {"bytes": bytes(v), "path": None}
            rows[c].append(v)
    ds = Dataset.from_dict(rows, features=_features())
    with atomic_path(path) as tmp:
        ds.to_parquet(str(tmp))
    return len(ds)


def load_split(path: str | os.PathLike):
    """Load a split written by ``write_split`` as a ``datasets.Dataset`` (audio not decoded)."""
    from datasets import Dataset

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset split not found: {path}")
    return Dataset.from_parquet(str(path), features=_features(), keep_in_memory=True)


@dataclass
class Example:
    id: str
    audio: np.ndarray  # float32 mono 16 kHz
    language: str
    domain: str
    transcript: str
    translation: str
    voice: str
    split: str
    duration: float


def read_examples(path: str | os.PathLike, *, decode: bool = True) -> list[Example]:
    """All rows of a split as ``Example`` objects, audio decoded to float32 16 kHz."""
    ds = load_split(path)
    out = []
    for row in ds:
        audio = decode_audio(row["audio"], what=f"{path} row {row['id']}") if decode else row["audio"]
        out.append(Example(**{**row, "audio": audio}))
    return out
