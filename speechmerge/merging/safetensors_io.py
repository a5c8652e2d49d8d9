"""Safetensors files read and written piece by piece, for the streaming merge engine.

* Reading: headers are parsed here and tensor rows are read with plain file reads straight into
  torch-allocated tensors. (``safetensors.safe_open`` was tried first: its tensors, allocated
  outside torch's allocator and interleaved with torch's own allocations, made the resident
  memory grow by about the bytes read, i.e. N + 1 models over a merge.) A ``Checkpoint`` is a
  ``.safetensors`` file, a Hugging Face model directory (``model.safetensors`` or a sharded
  ``model.safetensors.index.json``) or such an index file.
* Writing: ``SafetensorsWriter`` writes the header first (every shape and dtype is known from
  the base), then the tensors in order, in pieces; the file is read back by
  ``safetensors.torch.load_file``.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from speechmerge.utils import atomic_path

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    dtype: str  # safetensors name: F32, F16, BF16, ...
    shape: tuple[int, ...]

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def is_float(self) -> bool:
        return self.torch_dtype.is_floating_point

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.torch_dtype, device="cpu").element_size()


def _parse_header(path: Path) -> tuple[dict[str, TensorSpec], dict[str, str], dict[str, int]]:
    """Specs in file order (by data offset), metadata, and each tensor's absolute byte offset."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        meta = header.pop("__metadata__", None) or {}
        items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
        specs = {k: TensorSpec(v["dtype"], tuple(int(s) for s in v["shape"])) for k, v in items}
        starts = {k: 8 + n + int(v["data_offsets"][0]) for k, v in items}
        sizes = {k: int(v["data_offsets"][1]) - int(v["data_offsets"][0]) for k, v in items}
    except (OSError, struct.error, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    unknown = {s.dtype for s in specs.values()} - set(DTYPES)
    if unknown:
        raise ValueError(f"{path}: unsupported tensor dtype(s) {sorted(unknown)}")
    for key, spec in specs.items():
        if sizes[key] != spec.nbytes:
            raise ValueError(
                f"{path}: tensor {key!r} has {sizes[key]} bytes, {spec.dtype}{list(spec.shape)} needs {spec.nbytes}"
            )
    return specs, meta, starts


def read_header(path: str | Path) -> tuple[dict[str, TensorSpec], dict[str, str]]:
    """Tensor specs in file order (by data offset) and the metadata of one safetensors file."""
    specs, meta, _ = _parse_header(Path(path))
    return specs, meta


def weights_files(path: str | Path) -> list[Path]:
    """The safetensors file(s) of a checkpoint: a file, an index json, or a model directory."""
    path = Path(path)
    if path.is_dir():
        if (path / WEIGHTS_NAME).is_file():
            return [path / WEIGHTS_NAME]
        if (path / INDEX_NAME).is_file():
            return weights_files(path / INDEX_NAME)
        raise FileNotFoundError(f"{path}: no {WEIGHTS_NAME} or {INDEX_NAME} in this model directory")
    if path.name.endswith(".index.json"):
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: not a safetensors index ({err})") from err
        return [path.parent / f for f in dict.fromkeys(weight_map.values())]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    return [path]


def writable_bytes(t: torch.Tensor) -> memoryview:
    """A byte view of a contiguous CPU tensor's storage (to read into or write from)."""
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return memoryview(t.reshape(-1).numpy()).cast("B")


class Checkpoint:
    """A (possibly sharded) safetensors checkpoint: header-level specs, tensors read by rows.

    Data is read with plain file reads straight into tensors allocated by torch (see the
    module docstring for why not ``safe_open``).
    """

    def __init__(self, path: str | Path, label: str) -> None:
        self.path, self.label = Path(path), label
        self.specs: dict[str, TensorSpec] = {}
        self._file_of: dict[str, Path] = {}
        self._start: dict[str, int] = {}
        for file in weights_files(path):
            specs, _, starts = _parse_header(file)
            for key, spec in specs.items():
                if key in self.specs:
                    raise ValueError(f"{label}: tensor {key!r} appears in two shards ({self._file_of[key]}, {file})")
                self.specs[key] = spec
                self._file_of[key] = file
                self._start[key] = starts[key]
        self._handles: dict[Path, Any] = {}

    def read(self, key: str, rows: slice | None = None) -> torch.Tensor:
        """The tensor (rows ``rows`` of dim 0, or all of it) in its stored dtype."""
        spec = self.specs[key]
        shape, offset = spec.shape, self._start[key]
        if rows is not None and len(shape) > 0:
            r0, r1, step = rows.indices(shape[0])
            if step != 1:
                raise ValueError(f"{self.label}: row slices must be contiguous, got {rows}")
            r1 = max(r0, r1)
            offset += r0 * (spec.nbytes // shape[0])
            shape = (r1 - r0, *shape[1:])
        out = torch.empty(shape, dtype=spec.torch_dtype, device="cpu")
        buf = writable_bytes(out)
        file = self._file_of[key]
        handle = self._handles.get(file)
        if handle is None:
            handle = self._handles[file] = open(file, "rb", buffering=0)
        handle.seek(offset)
        got = 0
        while got < len(buf):
            n = handle.readinto(buf[got:])
            if not n:
                raise ValueError(f"{self.label}: {file} ends inside tensor {key!r}")
            got += n
        if spec.is_float and not bool(torch.isfinite(out).all()):
            raise ValueError(f"{self.label}: non-finite values (NaN or Inf) in tensor {key!r} of {file}")
        return out

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """Raw little-endian bytes of a CPU tensor, without a copy when it is contiguous."""
    return writable_bytes(t.detach().cpu().contiguous())


class SafetensorsWriter:
    """Writes a safetensors file incrementally: header first, then tensors in order, in pieces.

    Format: 8-byte little-endian header length, JSON header (``__metadata__`` and per tensor
    dtype, shape, data_offsets; padded with spaces to a multiple of 8), raw data.
    """

    def __init__(self, path: str | Path, specs: Mapping[str, TensorSpec], metadata: Mapping[str, str] | None) -> None:
        header: dict[str, Any] = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
        offset = 0
        for key, spec in specs.items():
            end = offset + spec.nbytes
            header[key] = {"dtype": spec.dtype, "shape": list(spec.shape), "data_offsets": [offset, end]}
            offset += spec.nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self._specs = dict(specs)
        self._order = list(specs)
        self._i = 0
        self._written = 0
        self._f = open(path, "wb")
        self._f.write(struct.pack("<Q", len(blob)))
        self._f.write(blob)

    def write(self, key: str, piece: torch.Tensor) -> None:
        """Append the next rows of tensor ``key`` (must be written in header order)."""
        while (  # zero-size tensors need no data: step over them
            self._written == 0
            and self._i < len(self._order)
            and self._order[self._i] != key
            and self._specs[self._order[self._i]].nbytes == 0
        ):
            self._i += 1
        if self._i >= len(self._order) or self._order[self._i] != key:
            expected = self._order[self._i] if self._i < len(self._order) else "nothing"
            raise RuntimeError(f"safetensors writer: got tensor {key!r}, expected {expected!r}")
        spec = self._specs[key]
        if piece.dtype != spec.torch_dtype:
            raise RuntimeError(f"safetensors writer: tensor {key!r} piece is {piece.dtype}, header says {spec.dtype}")
        data = tensor_bytes(piece)
        if self._written + len(data) > spec.nbytes:
            raise RuntimeError(f"safetensors writer: too much data for tensor {key!r}")
        self._f.write(data)
        self._written += len(data)
        if self._written == spec.nbytes:
            self._i += 1
            self._written = 0

    def close(self) -> None:
        incomplete = [k for k in self._order[self._i :] if self._specs[k].nbytes]
        self._f.close()
        if incomplete:
            raise RuntimeError(f"safetensors writer: tensor(s) not (fully) written: {incomplete[:5]}")

    def __enter__(self) -> "SafetensorsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._f.close()


def write_safetensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """A whole state dict as one safetensors file, byte-reproducible: tensors in a fixed order
    (widest dtype first, then by name), metadata keys sorted (``safetensors.torch.save_file``
    orders metadata differently from run to run). Written atomically with the umask's
    permissions."""
    for key, t in tensors.items():
        if t.dtype not in DTYPE_NAMES:
            raise ValueError(f"{path}: tensor {key!r} has unsupported dtype {t.dtype}")
    # widest elements first, then by name (safetensors' own order): every tensor stays aligned
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    specs = {k: TensorSpec(DTYPE_NAMES[tensors[k].dtype], tuple(tensors[k].shape)) for k in order}
    with atomic_path(path) as tmp, SafetensorsWriter(tmp, specs, metadata) as writer:
        for key, spec in specs.items():
            if spec.nbytes:
                writer.write(key, tensors[key].detach().cpu().contiguous())
