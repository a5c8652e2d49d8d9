"""The registry of local corpus readers.

A reader turns one split of a corpus, as released on disk under ``root``, into the records of
``speechmerge.data.io.COLUMNS`` (audio re-encoded as 16 kHz mono FLAC). It is registered under
the ``data.source`` name it serves, with the layout it expects (checked at plan time by
``check_layout``, so ``snakemake -n`` names a missing folder or file) and where that layout is
documented.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

_READERS: dict[str, "LocalReader"] = {}


@dataclass(frozen=True)
class LocalReader:
    name: str  # the data.source it serves
    layout: str  # one line: the folders and files under root
    documented_at: str  # where the layout and columns are specified
    check_layout: Callable[[Path, str, str], None]  # (root, language, split) -> None or an error naming the path
    read: Callable[..., list[dict]]  # (root, language=, split=, subset=, domain=, max_examples=, progress=)


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


def draw_hours(paths: Sequence[Path], hours: float, seed: int, *, where: str) -> list[int]:
    """Indices (in their original order) of utterances drawn at random (``seed``) until their
    duration reaches ``hours``; durations from the files' headers (nothing is decoded). More
    hours than the files hold is an error naming ``where`` and both figures."""
    import soundfile as sf

    want = float(hours) * 3600.0
    total, chosen = 0.0, []
    for i in np.random.default_rng(int(seed)).permutation(len(paths)):
        if total >= want:
            break
        try:
            info = sf.info(str(paths[i]))
        except RuntimeError as err:
            raise RuntimeError(f"{where}: cannot read the header of {paths[i]}: {err}") from None
        total += info.frames / info.samplerate
        chosen.append(int(i))
    if total < want:
        raise ValueError(f"{where}: {hours:g} hours asked for but the split holds {total / 3600:.3f} hours")
    return sorted(chosen)
