"""Real speech data behind the same record interface as the synthetic corpus.

Every adapter returns records with ``speechmerge.data.io.COLUMNS`` (audio re-encoded as 16-bit
16 kHz mono FLAC), ready for ``write_split``:

* ``from_manifest(tsv)``: a local TSV with a header; columns ``audio`` (or ``path``; relative
  to the manifest's folder), ``language`` (or the ``language=`` argument), ``transcript`` (or
  ``text`` / ``sentence``), optional ``translation``, ``domain``, ``id``, ``voice`` (or
  ``speaker``). Any sample rate / channel count is decoded with soundfile and resampled.
* ``from_hf_dataset(ds, kind)``: a ``datasets.Dataset`` of CoVoST-2, FLEURS or Common Voice
  with those corpora's column names (``HF_SOURCES``); audio as decoded arrays
  (``{"array", "sampling_rate"}``), encoded bytes or paths — never decoded through torchcodec
  (an ``Audio`` column is cast to ``decode=False`` first).
* ``load_real(source, split, ...)``: ``datasets.load_dataset`` + ``from_hf_dataset``; needs the
  Hugging Face hub (or a local copy), so it only works where that is reachable.

Ids are ``{subset}-{row:06d}`` (row order of the source), so they are unique and stable.
An empty transcript, a missing file, or undecodable/empty audio is an error naming the row/file.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from tqdm.auto import tqdm

from speechmerge.data.audio import SAMPLE_RATE, AudioError, decode_audio, encode_flac, resample, to_mono


class AdapterError(ValueError):
    """A manifest or dataset that cannot be mapped to records (names the row or column)."""


@dataclass(frozen=True)
class HFSource:
    hf_name: str
    transcript: tuple[str, ...]  # first non-missing column is used
    translation: str | None
    speaker: str | None
    language_column: str | None
    config: dict[str, str]  # project language -> dataset config name


# Locale / config codes of the project's languages in each corpus.
_CV_LOCALES = {
    "en": "en",
    "ca": "ca",
    "de": "de",
    "es": "es",
    "fr": "fr",
    "it": "it",
    "id": "id",
    "nl": "nl",
    "pt": "pt",
    "ru": "ru",
    "sv": "sv-SE",
    "zh": "zh-CN",
}
_FLEURS_CONFIGS = {
    "en": "en_us",
    "ca": "ca_es",
    "de": "de_de",
    "es": "es_419",
    "fr": "fr_fr",
    "it": "it_it",
    "id": "id_id",
    "nl": "nl_nl",
    "pt": "pt_br",
    "ru": "ru_ru",
    "sv": "sv_se",
    "zh": "cmn_hans_cn",
}
# FLEURS ``language`` column (English language names) -> project code
_FLEURS_NAMES = {
    "English": "en",
    "Catalan": "ca",
    "German": "de",
    "Spanish": "es",
    "French": "fr",
    "Italian": "it",
    "Indonesian": "id",
    "Dutch": "nl",
    "Portuguese": "pt",
    "Russian": "ru",
    "Swedish": "sv",
    "Mandarin Chinese": "zh",
}

HF_SOURCES: dict[str, HFSource] = {
    # facebook/covost2: client_id, file, audio, sentence, translation, id; configs "<src>_en"
    "covost2": HFSource(
        "facebook/covost2",
        ("sentence",),
        "translation",
        "client_id",
        None,
        {k: f"{v}_en" for k, v in _CV_LOCALES.items() if k != "en"},
    ),
    # google/fleurs: id, num_samples, path, audio, transcription, raw_transcription, gender,
    # lang_id, language, lang_group_id; parallel across languages by id, no English column
    "fleurs": HFSource(
        "google/fleurs", ("raw_transcription", "transcription"), None, "gender", "language", _FLEURS_CONFIGS
    ),
    # mozilla-foundation/common_voice_*: client_id, path, audio, sentence, up_votes, down_votes,
    # age, gender, accent, locale, segment, variant
    "common_voice": HFSource(
        "mozilla-foundation/common_voice_17_0", ("sentence",), None, "client_id", "locale", _CV_LOCALES
    ),
}

#: our split names -> Hugging Face split names
HF_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def _whisper_languages() -> set[str]:
    from speechmerge.languages import WHISPER_LANGUAGES

    return set(WHISPER_LANGUAGES)


def normalise_language(code: str) -> str:
    """'sv-SE' -> 'sv', 'zh-CN' -> 'zh', 'pt_br' -> 'pt', 'cmn' -> 'zh', 'Catalan' -> 'ca'."""
    code = str(code).strip()
    if code in _FLEURS_NAMES:
        return _FLEURS_NAMES[code]
    base = code.replace("_", "-").split("-")[0].lower()
    return {"cmn": "zh"}.get(base, base)


def _check_language(code: str, where: str) -> str:
    if not code:
        raise AdapterError(f"{where}: empty language code")
    if code not in _whisper_languages():
        raise AdapterError(f"{where}: unknown language code {code!r} (not a Whisper language)")
    return code


def _audio_to_wave(cell: Any, what: str) -> np.ndarray:
    """Any audio cell (decoded array dict, {"bytes","path"}, bytes, path, torchcodec decoder)
    -> float32 mono 16 kHz; errors name ``what``."""
    if hasattr(cell, "get_all_samples"):  # torchcodec AudioDecoder (already decoded by datasets)
        samples = cell.get_all_samples()
        cell = {"array": samples.data.numpy(), "sampling_rate": int(samples.sample_rate)}
    if isinstance(cell, Mapping) and cell.get("array") is not None:
        sr = cell.get("sampling_rate")
        if not sr:
            raise AudioError(f"{what}: audio array without sampling_rate")
        wave = np.asarray(cell["array"], dtype=np.float32)
        if wave.ndim == 2 and wave.shape[0] < wave.shape[1]:  # (channels, samples) as datasets gives it
            wave = wave.T
        if wave.ndim not in (1, 2):
            raise AudioError(f"{what}: audio array of shape {wave.shape}")
        return resample(to_mono(wave, what), int(sr), SAMPLE_RATE)
    return decode_audio(cell, what=what)


def _record(
    *, rid: str, wave: np.ndarray, language: str, domain: str, transcript: str, translation: str, voice: str, split: str
) -> dict:
    return {
        "id": rid,
        "audio": {"bytes": encode_flac(wave, SAMPLE_RATE), "path": None},
        "language": language,
        "domain": domain,
        "transcript": transcript,
        "translation": translation,
        "voice": voice,
        "split": split,
        "duration": round(len(wave) / SAMPLE_RATE, 6),
    }


def check_on_bad_audio(value: str) -> None:
    if value not in ("error", "skip"):
        raise ValueError(f"on_bad_audio must be error or skip, got {value!r}")


def take_first(rows: list, max_examples: int | None, *, source, split: str, have: str = "it has {n} rows") -> list:
    """The first ``max_examples`` rows (a split's ``sentences``; None: all); more than there are
    is an error naming ``source`` and both counts (``have`` formatted with ``n``)."""
    if max_examples is None:
        return rows
    if len(rows) < int(max_examples):
        raise AdapterError(
            f"{source}: {max_examples} utterances asked for (data.{split}.sentences) but {have.format(n=len(rows))}"
        )
    return rows[: int(max_examples)]


def decode_or_skip(
    path: Path, *, where: str, missing: str, on_bad_audio: str, skipped: list | None, entry: dict
) -> np.ndarray | None:
    """The clip at ``path`` decoded; a missing (error ``missing``), undecodable, empty or silent one
    raises, or with ``on_bad_audio="skip"`` gives None and is appended to ``skipped`` as ``entry``
    (``id``, ``file``, ``row``) with its ``reason``."""
    try:
        if not path.is_file():
            raise FileNotFoundError(missing)
        return decode_audio(str(path), what=f"{path} ({where})")
    except (FileNotFoundError, AudioError) as err:
        if on_bad_audio != "skip":
            raise
        if skipped is not None:
            skipped.append({**entry, "reason": str(err)})
        return None


def _first(row: Mapping, names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in row and row[name] is not None:
            return str(row[name])
    return None


def _read_manifest(tsv_path: Path) -> tuple[list[dict], str, str]:
    """Rows of a manifest TSV, its audio column and its text column (errors name the file)."""
    if not tsv_path.is_file():
        raise FileNotFoundError(f"manifest not found: {tsv_path}")
    raw = tsv_path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise AdapterError(
            f"{tsv_path}: not UTF-8 text: byte 0x{raw[err.start]:02x} on line {line} cannot be decoded "
            "(a Latin-1 or Windows-1252 export?); save the manifest as UTF-8"
        ) from None
    rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise AdapterError(f"{tsv_path}: manifest has no rows")
    header = set(rows[0])
    audio_col = next((c for c in ("audio", "path") if c in header), None)
    text_col = next((c for c in ("transcript", "text", "sentence") if c in header), None)
    if audio_col is None or text_col is None:
        raise AdapterError(
            f"{tsv_path}: manifest needs an 'audio' (or 'path') and a 'transcript' "
            f"(or 'text'/'sentence') column; it has {sorted(header)}"
        )
    return rows, audio_col, text_col


def manifest_audio_paths(tsv_path: str | os.PathLike) -> list[Path]:
    """The audio files a manifest names, in row order without repeats (relative paths are
    resolved against the manifest's folder). The rows are not checked beyond their audio cell."""
    tsv_path = Path(tsv_path)
    rows, audio_col, _ = _read_manifest(tsv_path)
    out = []
    for i, row in enumerate(rows):
        rel = (row.get(audio_col) or "").strip()
        if not rel:
            raise AdapterError(f"{tsv_path} row {i + 1} (line {i + 2}): empty audio path")
        out.append(Path(rel) if os.path.isabs(rel) else tsv_path.parent / rel)
    return list(dict.fromkeys(out))


def audio_checksums(tsv_path: str | os.PathLike) -> dict:
    """SHA-256 of the manifest and of every audio file it names, plus one over all of them:
    what a split built from the manifest was made of (a changed file changes ``sha256``)."""
    import hashlib

    tsv_path = Path(tsv_path)
    files = {}
    for path in manifest_audio_paths(tsv_path):
        if not path.is_file():
            raise FileNotFoundError(f"{tsv_path}: audio file not found: {path}")
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        files[str(path)] = h.hexdigest()
    manifest_sha = hashlib.sha256(tsv_path.read_bytes()).hexdigest()
    total = hashlib.sha256(manifest_sha.encode())
    for name, digest in files.items():
        total.update(f"{name}\t{digest}\n".encode())
    return {"manifest": str(tsv_path), "manifest_sha256": manifest_sha, "files": files, "sha256": total.hexdigest()}


def iter_manifest(
    tsv_path: str | os.PathLike,
    *,
    split: str = "test",
    language: str | None = None,
    domain: str = "clean",
    subset: str = "",
    max_examples: int | None = None,
    on_bad_audio: str = "error",
    skipped: list | None = None,
    progress: bool = True,
) -> Iterator[dict]:
    """The records of a manifest TSV, one at a time (see the module docstring for its columns); ``max_examples``:
    its first N rows (a split's ``sentences``), more than the manifest has is an error. A missing,
    undecodable, empty or silent audio file is an error naming file and row, or with
    ``on_bad_audio="skip"`` the row is left out and appended to ``skipped``
    (``{"id", "file", "row", "reason"}``)."""
    check_on_bad_audio(on_bad_audio)
    tsv_path = Path(tsv_path)
    rows, audio_col, text_col = _read_manifest(tsv_path)
    rows = take_first(rows, max_examples, source=tsv_path, split=split, have="the manifest has {n} rows")
    header = set(rows[0])
    if "language" not in header and not language:
        raise AdapterError(f"{tsv_path}: no 'language' column and no language given")
    subset = subset or tsv_path.stem
    seen = {}
    for i, row in enumerate(tqdm(rows, desc=f"manifest {tsv_path.name}", unit="utt", disable=not progress)):
        where = f"{tsv_path} row {i + 1} (line {i + 2})"
        if None in row or any(v is None for v in row.values()):
            raise AdapterError(f"{where}: wrong number of fields")
        rel = (row[audio_col] or "").strip()
        if not rel:
            raise AdapterError(f"{where}: empty audio path")
        audio_path = Path(rel) if os.path.isabs(rel) else tsv_path.parent / rel
        transcript = (row[text_col] or "").strip()
        if not transcript:
            raise AdapterError(f"{where}: empty transcript")
        lang = _check_language((row.get("language") or language or "").strip(), where)
        rid = (row.get("id") or "").strip() or f"{subset}-{i:06d}"
        if rid in seen:
            raise AdapterError(f"{where}: duplicate id {rid!r} (also row {seen[rid] + 1})")
        seen[rid] = i
        wave = decode_or_skip(
            audio_path,
            where=where,
            missing=f"{where}: audio file not found: {audio_path}",
            on_bad_audio=on_bad_audio,
            skipped=skipped,
            entry={"id": rid, "file": str(audio_path), "row": i + 1},
        )
        if wave is None:
            continue
        yield (
            _record(
                rid=rid,
                wave=wave,
                language=lang,
                domain=(row.get("domain") or "").strip() or domain,
                transcript=transcript,
                translation=(row.get("translation") or "").strip(),
                voice=(row.get("voice") or row.get("speaker") or "").strip(),
                split=split,
            )
        )


def from_manifest(tsv_path: str | os.PathLike, **kwargs) -> list[dict]:
    """``iter_manifest`` as a list (jobs stream ``iter_manifest``)."""
    return list(iter_manifest(tsv_path, **kwargs))


def _undecoded(ds, column: str):
    """Cast a ``datasets.Audio`` column to ``decode=False`` so rows carry bytes/paths (no torchcodec)."""
    from datasets import Audio

    feature = getattr(ds, "features", {}).get(column) if hasattr(ds, "features") else None
    if isinstance(feature, Audio) and feature.decode:
        return ds.cast_column(column, Audio(sampling_rate=None, decode=False))
    return ds


def iter_hf_dataset(
    ds,
    kind: str,
    *,
    split: str = "test",
    language: str | None = None,
    domain: str = "clean",
    subset: str = "",
    audio_column: str = "audio",
    max_examples: int | None = None,
    progress: bool = True,
) -> Iterator[dict]:
    """The records of a CoVoST-2 / FLEURS / Common Voice ``datasets.Dataset`` (their column
    names), one at a time; the columns are checked at the call, the rows as they are read.

    ``language``: project code of the source language; when omitted it comes from the
    ``locale`` (Common Voice) or ``language`` (FLEURS) column; CoVoST-2 has no such column.
    Translation: CoVoST-2's ``translation`` (English); empty for FLEURS and Common Voice.
    """
    if kind not in HF_SOURCES:
        raise AdapterError(f"unknown real-data source {kind!r}; known: {sorted(HF_SOURCES)}")
    src = HF_SOURCES[kind]
    columns = list(getattr(ds, "column_names", []) or [])
    if audio_column not in columns:
        raise AdapterError(f"{kind}: dataset has no {audio_column!r} column (columns: {columns})")
    if not any(c in columns for c in src.transcript):
        raise AdapterError(
            f"{kind}: dataset has none of the transcript columns {list(src.transcript)} (columns: {columns})"
        )
    if language is None and (src.language_column is None or src.language_column not in columns):
        raise AdapterError(f"{kind}: no language given and no {src.language_column or 'language'!r} column")
    ds = _undecoded(ds, audio_column)
    subset = subset or kind
    n = len(ds) if max_examples is None else min(len(ds), int(max_examples))

    def rows() -> Iterator[dict]:
        for i in tqdm(range(n), desc=f"{kind} {subset}/{split}", unit="utt", disable=not progress):
            row = ds[i]
            where = f"{kind} row {i}" + (f" (id {row['id']})" if "id" in row else "")
            transcript = (_first(row, src.transcript) or "").strip()
            if not transcript:
                raise AdapterError(f"{where}: empty reference text")
            lang = language or normalise_language(row[src.language_column])
            lang = _check_language(lang, where)
            translation = (str(row.get(src.translation) or "").strip()) if src.translation else ""
            if src.translation and not translation:
                raise AdapterError(f"{where}: empty translation")
            speaker = row.get(src.speaker) if src.speaker else None
            voice = "" if speaker is None else (f"gender={speaker}" if src.speaker == "gender" else str(speaker))
            wave = _audio_to_wave(row[audio_column], what=where)
            yield (
                _record(
                    rid=f"{subset}-{i:06d}",
                    wave=wave,
                    language=lang,
                    domain=domain,
                    transcript=transcript,
                    translation=translation,
                    voice=voice,
                    split=split,
                )
            )

    return rows()


def from_hf_dataset(ds, kind: str, **kwargs) -> list[dict]:
    """``iter_hf_dataset`` as a list."""
    return list(iter_hf_dataset(ds, kind, **kwargs))


def load_real(
    source: str,
    split: str,
    *,
    language: str,
    hf_name: str | None = None,
    config: str | None = None,
    max_examples: int | None = None,
    domain: str = "clean",
    subset: str = "",
    progress: bool = True,
    **load_kwargs,
) -> list[dict]:
    """``datasets.load_dataset`` for CoVoST-2 / FLEURS / Common Voice, mapped by ``from_hf_dataset``.

    ``hf_name`` / ``config`` override the defaults (``HF_SOURCES``: e.g. ``google/fleurs`` with
    ``ca_es``); ``split`` is ours (train/dev/test -> train/validation/test); extra keyword
    arguments go to ``load_dataset`` (``data_dir`` for CoVoST-2's Common Voice audio, ``revision``,
    ``token``...). Needs the hub or a local copy: offline it fails with datasets' own error.
    """
    from datasets import load_dataset

    if source not in HF_SOURCES:
        raise AdapterError(f"unknown real-data source {source!r}; known: {sorted(HF_SOURCES)}")
    if split not in HF_SPLITS:
        raise AdapterError(f"unknown split {split!r}; expected one of {sorted(HF_SPLITS)}")
    src = HF_SOURCES[source]
    if config is None:
        if language not in src.config:
            raise AdapterError(f"{source}: no default config for language {language!r}; pass config=")
        config = src.config[language]
    hf_split = HF_SPLITS[split] + (f"[:{int(max_examples)}]" if max_examples else "")
    name = hf_name or src.hf_name
    try:
        ds = load_dataset(name, config, split=hf_split, **load_kwargs)
    except RuntimeError as err:
        if "scripts are no longer supported" not in str(err):
            raise
        from speechmerge.data.readers import reader_names

        local = (
            "set data.root to the release on disk (docs/data.md)"
            if source in reader_names()
            else "convert it to manifests (data.source: manifest, docs/data.md)"
        )
        raise AdapterError(
            f"{source}: the hub dataset {name!r} is a loading script, which this version of datasets refuses "
            f"to run ({err}); {local}"
        ) from None
    return from_hf_dataset(
        ds,
        source,
        split=split,
        language=language,
        domain=domain,
        subset=subset,
        max_examples=max_examples,
        progress=progress,
    )
