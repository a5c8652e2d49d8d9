"""One dataset split = one parquet file, readable as a Hugging Face ``datasets.Dataset``.

Columns (``COLUMNS``): id, audio ({"bytes": FLAC, "path": None}, i.e. ``Audio(decode=False)``),
language, domain, transcript, translation (English), voice, split, duration (seconds).
Audio is decoded with soundfile (``decode_audio``), never through torchcodec.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from speechmerge.data.audio import decode_audio
from speechmerge.utils import atomic_path

COLUMNS = ("id", "audio", "language", "domain", "transcript", "translation", "voice", "split", "duration")


_STRING_COLUMNS = ("id", "language", "domain", "transcript", "translation", "voice", "split")


def _features():
    """The ``datasets.Features`` of a split (used when reading through ``datasets``)."""
    from datasets import Audio, Features, Value

    return Features(
        {
            "id": Value("string"),
            "audio": Audio(sampling_rate=16_000, decode=False),
            "language": Value("string"),
            "domain": Value("string"),
            "transcript": Value("string"),
            "translation": Value("string"),
            "voice": Value("string"),
            "split": Value("string"),
            "duration": Value("float32"),
        }
    )


def arrow_schema():
    """The pyarrow schema of a split, equal to ``_features().arrow_schema`` (tested) including
    the ``huggingface`` metadata that tells ``datasets`` the column features; built without
    importing ``datasets`` (≈ 2 s per synthesis job)."""
    import pyarrow as pa

    def value(dtype):
        return {"dtype": dtype, "_type": "Value"}

    types = {c: pa.string() for c in _STRING_COLUMNS}
    types["audio"] = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    types["duration"] = pa.float32()
    feats = {c: value("string") for c in _STRING_COLUMNS}
    feats["audio"] = {"sampling_rate": 16_000, "decode": False, "_type": "Audio"}
    feats["duration"] = value("float32")
    meta = json.dumps({"info": {"features": {c: feats[c] for c in COLUMNS}}})
    return pa.schema([(c, types[c]) for c in COLUMNS], metadata={"huggingface": meta})


#: rows per parquet row group of a split (the unit a streaming reader holds in memory)
ROW_GROUP = 128


def write_split(
    records: Iterable[Mapping],
    path: str | os.PathLike,
    *,
    provenance: Mapping | Callable[[], Mapping] | None = None,
) -> int:
    """Write records (dicts with ``COLUMNS``; audio as FLAC bytes or {"bytes":..}) atomically,
    ``ROW_GROUP`` rows at a time: records may be a generator, and memory holds one row group.

    The table is built with pyarrow against the ``datasets`` schema (its metadata carries the
    features, so ``Dataset.from_parquet`` sees ``Audio(decode=False)``): going through
    ``Dataset.from_dict`` would call ``Audio.encode_example``, which imports torchcodec even for
    plain bytes. Same records -> byte-identical file. ``provenance`` (JSON-serialisable, or a
    function giving it, called after the last record: e.g. the clips a reader skipped) is stored
    in the file's key-value metadata under ``speechmerge`` (see ``split_provenance``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema()
    n = 0
    with atomic_path(path) as tmp:
        writer = pq.ParquetWriter(str(tmp), schema)
        try:
            for chunk in _row_groups(records, path):
                rows = {c: [rec[c] for rec in chunk] for c in COLUMNS}
                writer.write_table(pa.Table.from_pydict(rows, schema=schema), row_group_size=ROW_GROUP)
                n += len(chunk)
            if callable(provenance):
                provenance = provenance()
            if provenance is not None:
                writer.add_key_value_metadata({"speechmerge": json.dumps(provenance, sort_keys=True, default=str)})
        finally:
            writer.close()
    return n


def _row_groups(records: Iterable[Mapping], path) -> Iterator[list[dict]]:
    """``records`` checked (every column, audio bytes) in lists of ``ROW_GROUP``."""
    chunk: list[dict] = []
    for i, rec in enumerate(records):
        missing = [c for c in COLUMNS if c not in rec]
        if missing:
            raise KeyError(f"{path}: record {i} ({rec.get('id', '?')}) lacks columns {missing}")
        cell = rec["audio"]
        if isinstance(cell, (bytes, bytearray)):
            cell = {"bytes": bytes(cell), "path": None}
        if not isinstance(cell, Mapping) or not cell.get("bytes"):
            raise ValueError(f"{path}: record {i} ({rec['id']}) has no audio bytes")
        chunk.append(
            {**{c: rec[c] for c in COLUMNS}, "audio": {"bytes": bytes(cell["bytes"]), "path": cell.get("path")}}
        )
        if len(chunk) == ROW_GROUP:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def split_provenance(path: str | os.PathLike) -> dict | None:
    """The ``provenance`` mapping stored by ``write_split`` (None if there is none)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(str(path)).metadata.metadata or {}
    return json.loads(meta[b"speechmerge"]) if b"speechmerge" in meta else None


def skipped_audio(paths) -> dict[str, int]:
    """Split file -> how many clips its reader left out (``data.on_bad_audio: skip``), for the
    files that left any out (their provenance's ``skipped_audio``)."""
    out = {}
    for p in paths:
        n = int(((split_provenance(p) or {}).get("skipped_audio") or {}).get("n") or 0)
        if n:
            out[str(p)] = n
    return out


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


def iter_examples(path: str | os.PathLike, *, rows: int = ROW_GROUP, decode: bool = True):
    """The rows of a split as ``Example`` objects, ``rows`` at a time (lists), in file order:
    the same rows as ``read_examples`` with memory bounded by one chunk."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset split not found: {path}")
    try:
        pf = pq.ParquetFile(str(path))
    except Exception as err:  # pyarrow's errors do not name the file
        raise ValueError(
            f"{path}: not a readable parquet split ({err}); rebuild it (snakemake --forcerun {path})"
        ) from None
    missing = [c for c in COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise ValueError(
            f"{path}: not a speechmerge split, columns {missing} are missing (has {pf.schema_arrow.names})"
        )
    for batch in pf.iter_batches(batch_size=int(rows), columns=list(COLUMNS)):
        out = []
        for row in batch.to_pylist():
            audio = decode_audio(row["audio"], what=f"{path} row {row['id']}") if decode else row["audio"]
            out.append(Example(**{**row, "audio": audio}))
        yield out


def read_examples(path: str | os.PathLike, *, decode: bool = True) -> list[Example]:
    """All rows of a split as ``Example`` objects, audio decoded to float32 16 kHz.

    Read with pyarrow directly (the same rows as ``load_split``; importing ``datasets`` alone costs
    about 2 s, which every training and evaluation job would pay).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset split not found: {path}")
    try:
        pf = pq.ParquetFile(str(path))  # not pq.read_table: that imports pyarrow.dataset (~0.3 s)
    except Exception as err:  # pyarrow's errors do not name the file
        raise ValueError(
            f"{path}: not a readable parquet split ({err}); rebuild it (snakemake --forcerun {path})"
        ) from None
    names = pf.schema_arrow.names
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{path}: not a speechmerge split, columns {missing} are missing (has {names})")
    out = []
    for row in pf.read(columns=list(COLUMNS)).to_pylist():
        audio = decode_audio(row["audio"], what=f"{path} row {row['id']}") if decode else row["audio"]
        out.append(Example(**{**row, "audio": audio}))
    return out
