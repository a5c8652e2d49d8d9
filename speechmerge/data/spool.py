"""Waveforms kept in a file on disk instead of in memory: a decoding job reads its test sets a
chunk at a time into a ``WaveSpool`` and its batches read back only the waveforms they decode,
so memory holds one batch however long the test sets are.

``WaveSpool.temporary()`` makes one in a temporary folder (``TMPDIR``), removed on exit.
``spool.take(rows)`` is the sequence of those waveforms that ``decode.decode_tasks`` indexes;
its ``lengths`` (samples) are known without reading the audio back.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np


class WaveSpool:
    """float32 waveforms appended to one file; ``spool[i]`` reads waveform ``i`` back (os.pread)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.offsets: list[int] = []
        self.lengths: list[int] = []
        self._end = 0

    @classmethod
    @contextlib.contextmanager
    def temporary(cls, dir: str | os.PathLike | None = None) -> Iterator["WaveSpool"]:
        with tempfile.TemporaryDirectory(prefix="speechmerge-waves-", dir=dir) as d:
            spool = cls(Path(d) / "waves.f32")
            try:
                yield spool
            finally:
                spool.close()

    def append(self, wave: np.ndarray) -> int:
        """Store one waveform; returns its index."""
        data = np.ascontiguousarray(wave, dtype=np.float32).reshape(-1)
        if self._fd is None:
            raise ValueError(f"{self.path}: spool is closed")
        os.pwrite(self._fd, data.tobytes(), self._end)
        self.offsets.append(self._end)
        self.lengths.append(int(data.size))
        self._end += data.nbytes
        return len(self.lengths) - 1

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        if self._fd is None:
            raise ValueError(f"{self.path}: spool is closed")
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.path}: waveform {i} of {len(self)}")
        n = self.lengths[i]
        buf = os.pread(self._fd, 4 * n, self.offsets[i])
        return np.frombuffer(buf, dtype=np.float32).copy()

    def take(self, rows: Sequence[int]) -> "SpooledWaves":
        return SpooledWaves(self, list(rows))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SpooledWaves(Sequence):
    """The waveforms ``rows`` of a spool, in that order (``lengths``: their sample counts)."""

    def __init__(self, spool: WaveSpool, rows: list[int]):
        self.spool, self.rows = spool, rows

    @property
    def lengths(self) -> list[int]:
        return [self.spool.lengths[r] for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.spool[r] for r in self.rows[i]]
        return self.spool[self.rows[i]]
