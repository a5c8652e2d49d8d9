"""A corpus the Hugging Face ``datasets`` library wrote to disk: a split saved with
``Dataset.save_to_disk`` (or a ``DatasetDict`` saved the same way), or a folder of parquet files
such as the hub's parquet conversion (``refs/convert/parquet``)::

    <root>/<config>/<split>/state.json, dataset_info.json, data-00000-of-0000N.arrow   (save_to_disk)
    <root>/<config>/<split>/0000.parquet, 0001.parquet, ...                         (parquet files)

``<config>`` is the folder of one language: the project code (``de``), or the corpus's own config
name (Common Voice ``de`` / ``sv-SE``, CoVoST 2 ``de_en``, FLEURS ``de_de``). ``<split>`` is
``train``, ``validation`` (or ``dev``) and ``test``. The columns are those of the corpus on the
hub (``speechmerge.data.adapters.HF_SOURCES``), recognised by name: a ``translation`` column is
CoVoST 2 (``sentence``, ``translation``, ``client_id``), ``raw_transcription`` is FLEURS,
``sentence`` alone is Common Voice (``client_id`` the speaker). The ``audio`` column holds the
encoded file (``{"bytes", "path"}`` as ``datasets`` stores an ``Audio`` feature; a missing
``bytes`` is read from ``path``). Rows are read a record batch at a time, so memory does not
grow with the split; ``datasets`` itself is not imported. Ids are the clip's file name without
extension where the row names one (``path``), else ``<subset>-<row>``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from speechmerge.data.adapters import (
    _CV_LOCALES,
    _FLEURS_CONFIGS,
    HF_SOURCES,
    AdapterError,
    _audio_to_wave,
    _record,
    check_on_bad_audio,
)
from speechmerge.data.audio import AudioError
from speechmerge.data.readers.base import LocalReader, draw_hours, register

SPLIT_DIRS = {"train": ("train",), "dev": ("validation", "dev"), "test": ("test",)}
BATCH_ROWS = 64


def config_candidates(language: str) -> list[str]:
    """Folder names that may hold one language, in the order they are tried."""
    names = [language, _CV_LOCALES.get(language), f"{_CV_LOCALES.get(language, language)}_en"]
    names.append(_FLEURS_CONFIGS.get(language))
    return list(dict.fromkeys(n for n in names if n))


def split_dir(root: Path, language: str, split: str) -> Path:
    """The folder of one split, or an error naming what was looked for."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"datasets folder root {root} is not a folder")
    if split not in SPLIT_DIRS:
        raise ValueError(f"datasets folder: unknown split {split!r}; expected one of {sorted(SPLIT_DIRS)}")
    configs = [root / c for c in config_candidates(language) if (root / c).is_dir()]
    if not configs:
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"datasets folder root {root} has none of the folders {config_candidates(language)} for language "
            f"{language!r}; found: {found}"
        )
    for name in SPLIT_DIRS[split]:
        if (configs[0] / name).is_dir():
            return configs[0] / name
    raise FileNotFoundError(f"datasets folder {configs[0]} has no split folder {' or '.join(SPLIT_DIRS[split])}/")


def data_files(folder: Path) -> tuple[str, list[Path]]:
    """("arrow" | "parquet", the files in order): state.json's list for save_to_disk, else the
    parquet files sorted by name."""
    state = folder / "state.json"
    if state.is_file():
        try:
            names = [f["filename"] for f in json.loads(state.read_text())["_data_files"]]
        except (ValueError, KeyError, TypeError) as err:
            raise AdapterError(f"{state}: not a datasets save_to_disk state ({err})") from None
        files = [folder / n for n in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{state} names missing file(s) {missing}")
        return "arrow", files
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder}: neither a save_to_disk folder (state.json) nor parquet files (*.parquet)")
    return "parquet", files


def check_layout(root: Path, language: str, split: str) -> None:
    data_files(split_dir(root, language, split))


def _arrow_reader(source):
    """A reader of an ``.arrow`` file: an Arrow stream as ``datasets`` writes them, else the
    Arrow file format."""
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_file(source)


def _batches(kind: str, files: list[Path]) -> Iterator:
    """The files' record batches in order, ``BATCH_ROWS`` rows at most each."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for f in files:
        if kind == "parquet":
            yield from pq.ParquetFile(str(f)).iter_batches(batch_size=BATCH_ROWS)
            continue
        with pa.memory_map(str(f)) as source:
            reader = _arrow_reader(source)
            if isinstance(reader, pa.ipc.RecordBatchFileReader):
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            else:
                batches = iter(reader)
            for batch in batches:
                for start in range(0, batch.num_rows, BATCH_ROWS):
                    yield batch.slice(start, BATCH_ROWS)


def corpus_of(columns: list[str], where: str) -> str:
    """Which corpus's hub columns these are (``HF_SOURCES`` key)."""
    if "audio" not in columns:
        raise AdapterError(f"{where}: no 'audio' column (columns: {columns})")
    if "translation" in columns and "sentence" in columns:
        return "covost2"
    if "raw_transcription" in columns or "transcription" in columns:
        return "fleurs"
    if "sentence" in columns:
        return "common_voice"
    raise AdapterError(
        f"{where}: columns {columns} are not CoVoST 2 (sentence, translation), FLEURS (raw_transcription) "
        "or Common Voice (sentence)"
    )


def _columns(kind: str, files: list[Path]) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if kind == "parquet":
        return pq.read_schema(str(files[0])).names
    with pa.memory_map(str(files[0])) as source:
        return _arrow_reader(source).schema.names


def _seconds(cell, row: dict, where: str) -> float:
    """A row's duration without decoding: FLEURS' num_samples, else the audio header."""
    import soundfile as sf

    if row.get("num_samples"):
        return int(row["num_samples"]) / 16000
    data = (cell or {}).get("bytes") if isinstance(cell, dict) else None
    try:
        info = sf.info(io.BytesIO(data) if data else str((cell or {}).get("path")))
    except Exception as err:  # noqa: BLE001 - names the row
        raise AudioError(f"{where}: cannot read the audio header: {err}") from None
    return info.frames / info.samplerate


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
    """Records of one split in file order (the first ``max_examples``; ``hours`` drawn by
    ``seed``; speakers in ``exclude_speakers`` left out); bad audio as in ``common_voice.read``."""
    check_on_bad_audio(on_bad_audio)
    folder = split_dir(Path(root), language, split)
    kind, files = data_files(folder)
    corpus = corpus_of(_columns(kind, files), str(folder))
    src = HF_SOURCES[corpus]
    subset = subset or corpus
    speaker_col = src.speaker if src.speaker == "client_id" else None
    wanted = None  # row numbers to keep (None: all)
    if hours is not None or exclude_speakers:
        durations, keep = [], []
        for batch in _batches(kind, files):
            for row in batch.to_pylist():
                i = len(durations)
                if exclude_speakers and speaker_col and str(row.get(speaker_col) or "") in exclude_speakers:
                    durations.append(0.0)
                    continue
                keep.append(i)
                durations.append(_seconds(row["audio"], row, f"{folder} row {i}") if hours is not None else 0.0)
        if hours is not None:
            drawn = draw_hours(
                lambda k: durations[keep[k]], len(keep), hours, seed, where=f"{folder} (data.{split}.hours)"
            )
            keep = [keep[k] for k in drawn]
        wanted = set(keep)
    n_rows = 0
    with tqdm(desc=f"datasets {folder.parent.name} {split}", unit="utt", disable=not progress) as bar:
        i = -1
        for batch in _batches(kind, files):
            for row in batch.to_pylist():
                i += 1
                if wanted is not None and i not in wanted:
                    continue
                if max_examples is not None and n_rows >= int(max_examples):
                    return
                n_rows += 1
                rec = _row_record(row, i, folder, src, language, domain, subset, split, on_bad_audio, skipped)
                bar.update(1)
                if rec is not None:
                    yield rec
    if max_examples is not None and n_rows < int(max_examples):
        raise AdapterError(f"{folder}: {max_examples} examples asked for (data.{split}.sentences) but it has {n_rows}")


def _row_record(row, i, folder, src, language, domain, subset, split, on_bad_audio, skipped) -> dict | None:
    where = f"{folder} row {i}"
    transcript = next((str(row[c]).strip() for c in src.transcript if row.get(c)), "")
    if not transcript:
        raise AdapterError(f"{where}: empty reference text ({'/'.join(src.transcript)})")
    translation = str(row.get(src.translation) or "").strip() if src.translation else ""
    if src.translation and not translation:
        raise AdapterError(f"{where}: empty translation")
    cell = row["audio"]
    path = (cell or {}).get("path") if isinstance(cell, dict) else None
    name = row.get("path") or path
    rid = Path(str(name)).stem if name else f"{subset}-{i:06d}"
    if isinstance(cell, dict) and not cell.get("bytes") and path:
        cell = {"bytes": None, "path": path}
    try:
        wave = _audio_to_wave(cell, what=where)
        if wave.size == 0 or not np.any(wave):
            raise AudioError(f"{where}: audio is {'empty' if wave.size == 0 else 'silent'}")
    except (AudioError, FileNotFoundError, RuntimeError, AdapterError) as err:
        if on_bad_audio != "skip":
            raise
        if skipped is not None:
            skipped.append({"id": rid, "file": str(path or ""), "row": i, "reason": str(err)})
        return None
    voice = str(row.get("client_id") or "").strip() if src.speaker == "client_id" else ""
    return _record(
        rid=rid,
        wave=wave,
        language=language,
        domain=domain,
        transcript=transcript,
        translation=translation,
        voice=voice,
        split=split,
    )


def index_files(root: str | Path, language: str, split: str) -> list[Path]:
    """The split folder's data files (and its state.json)."""
    folder = split_dir(Path(root), language, split)
    state = folder / "state.json"
    return [*([state] if state.is_file() else []), *data_files(folder)[1]]


def speakers(root: str | Path, language: str, split: str) -> set[str]:
    """The speakers (client_id) of one split; empty where the corpus has none (FLEURS)."""
    folder = split_dir(Path(root), language, split)
    kind, files = data_files(folder)
    if "client_id" not in _columns(kind, files):
        return set()
    return {str(v) for batch in _batches(kind, files) for v in batch.column("client_id").to_pylist() if v}


def read(root: str | Path, **kwargs) -> list[dict]:
    """``iter_records`` as a list (a split at once; jobs stream ``iter_records``)."""
    return list(iter_records(root, **kwargs))


READER = register(
    LocalReader(
        name="hf_disk",
        layout="<root>/<config>/<split>/: a datasets save_to_disk folder (state.json + *.arrow) or *.parquet files",
        documented_at=(
            "huggingface/datasets Dataset.save_to_disk / load_from_disk (state.json, data-*.arrow as Arrow "
            "streams) and the hub's parquet conversion (refs/convert/parquet: <config>/<split>/NNNN.parquet)"
        ),
        check_layout=check_layout,
        index_files=index_files,
        records=iter_records,
        speakers=speakers,
    )
)
