"""The registry of local corpus readers.

A reader turns one split of a corpus, as released on disk under ``root``, into a stream of the records of
``speechmerge.data.io.COLUMNS`` (audio re-encoded as 16 kHz mono FLAC). It is registered under
the ``data.source`` name it serves, with the layout it expects (checked at plan time by
``check_layout``, so ``snakemake -n`` names a missing folder or file) and where that layout is
documented.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

_READERS: dict[str, "LocalReader"] = {}


@dataclass(frozen=True)
class LocalReader:
    name: str  # the data.source it serves
    layout: str  # one line: the folders and files under root
    documented_at: str  # where the layout and columns are specified
    check_layout: Callable[..., None]  # (root, language, split, **options) -> None or an error naming the path
    # (root, language=, split=, subset=, domain=, max_examples=, hours=, seed=, on_bad_audio=, skipped=,
    # progress=) -> the split's records one at a time (a generator: audio is read as it is written)
    records: Callable[..., Iterator[dict]]
    # (root, language, split) -> the files that list the split (its TSVs, a datasets folder's
    # files): the inputs of the job that reads it, so editing one rebuilds the split
    index_files: Callable[..., list[Path]]
    # (root, language, split) -> the split's speaker ids; None where the corpus has none (FLEURS)
    speakers: Callable[..., set[str]] | None = None
    # further data keys the reader takes (folders; $VARIABLES expanded), passed by name to every
    # function above: e.g. CoVoST 2's translations folder
    options: tuple[str, ...] = ()


def register(reader: LocalReader) -> LocalReader:
    for field in ("name", "layout", "documented_at"):
        if not str(getattr(reader, field) or "").strip():
            raise ValueError(f"local reader {reader.name!r}: {field} is empty")
    if reader.name in _READERS:
        raise ValueError(f"local reader {reader.name!r} is registered twice")
    _READERS[reader.name] = reader
    return reader


def get_reader(name: str) -> LocalReader:
    try:
        return _READERS[name]
    except KeyError:
        raise KeyError(f"no local reader for data source {name!r}; readers: {reader_names()}") from None


def reader_names() -> list[str]:
    return sorted(_READERS)


def header_seconds(path: Path, *, where: str) -> float:
    """A clip's duration from its header (nothing is decoded); an unreadable header names
    ``where`` and the file."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except RuntimeError as err:
        raise RuntimeError(f"{where}: cannot read the header of {path}: {err}") from None
    return info.frames / info.samplerate


def draw_hours(duration_of: Callable[[int], float], n: int, hours: float, seed: int, *, where: str) -> list[int]:
    """Indices (in their original order) of ``n`` utterances drawn at random (``seed``) until
    their duration (``duration_of(i)``, seconds; asked only of the drawn ones) reaches ``hours``.
    More hours than the utterances hold is an error naming ``where`` and both figures."""
    want = float(hours) * 3600.0
    total, chosen = 0.0, []
    for i in np.random.default_rng(int(seed)).permutation(n):
        if total >= want:
            break
        total += duration_of(int(i))
        chosen.append(int(i))
    if total < want:
        raise ValueError(f"{where}: {hours:g} hours asked for but the split holds {total / 3600:.3f} hours")
    return sorted(chosen)


def draw_present_hours(
    numbered: list[tuple[int, dict]],
    path_of: Callable[[dict], Path],
    *,
    hours: float,
    seed: int,
    where: str,
    where_of: Callable[[int], str],
    on_bad_audio: str,
    skipped: list | None,
) -> list[tuple[int, dict]]:
    """``hours`` of the ``(row index, row)`` pairs whose clip exists (``drop_missing``), drawn by
    ``seed`` with durations from the clips' headers (``draw_hours``), in their original order;
    ``where`` names the split's file and key in errors."""
    present = drop_missing(numbered, path_of, where_of=where_of, on_bad_audio=on_bad_audio, skipped=skipped)
    keep = draw_hours(
        lambda k: header_seconds(path_of(present[k][1]), where=where), len(present), hours, seed, where=where
    )
    return [present[k] for k in keep]


def drop_missing(
    numbered: list[tuple[int, dict]],
    path_of: Callable[[dict], Path],
    *,
    where_of: Callable[[int], str],
    on_bad_audio: str,
    skipped: list | None,
) -> list[tuple[int, dict]]:
    """The ``(row index, row)`` pairs whose clip exists; a missing one is an error naming
    ``where_of(i)`` and the file, or with ``on_bad_audio="skip"`` is listed in ``skipped``."""
    kept = []
    for i, row in numbered:
        path = path_of(row)
        if path.is_file():
            kept.append((i, row))
        elif on_bad_audio != "skip":
            raise FileNotFoundError(f"{where_of(i)}: clip not found: {path}")
        elif skipped is not None:
            skipped.append({"id": path.stem, "file": str(path), "row": i + 1, "reason": "clip not found"})
    return kept


#: the splits whose speakers a split leaves out with ``data.speakers: disjoint`` (the later ones:
#: test keeps all its speakers, dev leaves out test's, train leaves out dev's and test's)
LATER_SPLITS = {"train": ("dev", "test"), "dev": ("test",), "test": ()}


def speakers_to_exclude(reader: LocalReader, root, language: str, split: str, **options) -> set[str]:
    """The speakers of the splits after ``split`` (``LATER_SPLITS``) in the same corpus, which a
    speaker-disjoint ``split`` leaves out; an error where the corpus has no speaker ids."""
    if reader.speakers is None:
        raise ValueError(f"data.speakers: disjoint: corpus {reader.name!r} has no speaker ids")
    out: set[str] = set()
    for later in LATER_SPLITS[split]:
        out |= reader.speakers(Path(root), language, later, **options)
    return out
