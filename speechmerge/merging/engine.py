"""Streaming merge engine: safetensors in, one tensor (or one row chunk) at a time, safetensors out.

For every tensor of the base, in the base file's order, the engine reads the base tensor θ_0
and one tensor per expert, asks the method for the merged delta Δ and writes θ_0 + Δ (or Δ
with ``delta_only``) straight into the output file, whose header is written first (every shape
and dtype is known from the base). Nothing of the merged model is held in memory.

* Files: read and written by ``speechmerge.merging.safetensors_io`` (header parsing, row reads
  into torch-allocated tensors, an incremental writer whose output ``safetensors.torch.load_file``
  reads back).
* Inputs: task-vector files (τ_i = θ_i − θ_0, float32, every tensor of the base: ``merge_files``)
  or full expert checkpoints whose τ_i is computed on the fly tensor by tensor
  (``merge_models``, used by the CLI). A checkpoint is a ``.safetensors`` file, a Hugging Face
  model directory (``model.safetensors`` or a sharded ``model.safetensors.index.json``) or such
  an index file.
* Methods that implement the chunked protocol (``merge_stream``, see
  ``speechmerge.merging.streaming``) see row chunks of at most ``CHUNK_ELEMS`` elements
  per expert plus a few whole-tensor buffers; the others get whole tensors via
  ``merge_tensor``. Either way memory does not grow with N beyond one tensor (or one chunk)
  per expert.
* Computation is float32; merged weights are written in the base's dtype, deltas
  (``delta_only``) in float32 like task vectors. Non-floating tensors are copied from the base
  (zeros with ``delta_only``).
* Checks before anything is written: every input has exactly the base's keys (a tied alias the
  base omits, ``proj_out.weight`` of Whisper, is ignored with a warning), the same shapes, and
  a floating dtype (task vectors) or the base's dtype (expert checkpoints). A NaN or Inf in a
  tensor read (base or expert) is an error naming the file and the tensor; a non-finite merged
  value is an error naming the tensor. The output is written atomically (``atomic_path``).
* Determinism: the same inputs, hyperparameters, seed and thread count give a bit-identical
  file (no timestamps in it; randomness comes from ``TensorContext.generator()``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import resource
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from speechmerge.merging import streaming
from speechmerge.merging.base import MergeMethod, TensorContext, get_method, is_matrix
from speechmerge.merging.safetensors_io import (
    DTYPE_NAMES,
    INDEX_NAME,
    WEIGHTS_NAME,
    Checkpoint,
    SafetensorsWriter,
    TensorSpec,
)
from speechmerge.merging.streaming import InMemorySource, TensorSource
from speechmerge.models.spec import is_stamp
from speechmerge.utils import atomic_path, provenance, write_json

log = logging.getLogger(__name__)

# Keys an input may carry while the base omits them because they are tied to another tensor.
TIED_ALIASES = {"proj_out.weight": "model.decoder.embed_tokens.weight"}
# Files of a model directory that are weights or run records, not configuration (CLI copy).
_NOT_CONFIG_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".csv", ".png", ".log",
)  # fmt: skip


class FileSource(TensorSource):
    """``TensorSource`` over checkpoints; task vectors read directly or computed as θ_i − θ_0.

    The last chunk read (at most ``streaming.CHUNK_ELEMS`` per expert) is cached, so the several passes a
    method makes over a small tensor read it once.
    """

    def __init__(self, key: str, base: Checkpoint, inputs: Sequence[Checkpoint], inputs_are_weights: bool) -> None:
        self.key, self.shape, self.n = key, torch.Size(base.specs[key].shape), len(inputs)
        self._base, self._inputs, self._weights = base, list(inputs), inputs_are_weights
        self._cache_rows: tuple[int, int] | None = None
        self._cache: dict[Any, torch.Tensor] = {}

    def _cached(self, slot: Any, rows: slice | None, load: Callable[[], torch.Tensor]) -> torch.Tensor:
        if len(self.shape) == 0:
            span = (0, 1)
        else:
            r = rows if rows is not None else slice(0, self.shape[0])
            span = (r.start or 0, self.shape[0] if r.stop is None else r.stop)
        rows_numel = (span[1] - span[0]) * (self.numel // max(1, self.shape[0]) if len(self.shape) else 1)
        if rows_numel > streaming.CHUNK_ELEMS:
            return load()
        if span != self._cache_rows:
            self._cache_rows, self._cache = span, {}
        if slot not in self._cache:
            self._cache[slot] = load()
        return self._cache[slot]

    def base(self, rows: slice | None = None) -> torch.Tensor:
        return self._cached("base", rows, lambda: self._base.read(self.key, rows).float())

    def delta(self, i: int, rows: slice | None = None) -> torch.Tensor:
        def load() -> torch.Tensor:
            x = self._inputs[i].read(self.key, rows).float()  # a new tensor: subtract in place
            return x.sub_(self.base(rows)) if self._weights else x

        return self._cached(i, rows, load)


class MemorySink:
    """Collects the written pieces into a state dict (``merge_state_dicts``)."""

    def __init__(self) -> None:
        self.pieces: dict[str, list[torch.Tensor]] = {}

    def write(self, key: str, piece: torch.Tensor) -> None:
        self.pieces.setdefault(key, []).append(piece)

    def result(self, specs: Mapping[str, TensorSpec]) -> dict[str, torch.Tensor]:
        out = {}
        for key, spec in specs.items():
            parts = self.pieces.get(key, [])
            if not parts:
                out[key] = torch.empty(spec.shape, dtype=spec.torch_dtype, device="cpu")
            else:
                out[key] = (parts[0] if len(parts) == 1 else torch.cat(parts, 0)).reshape(spec.shape)
        return out


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def check_inputs(
    base: Mapping[str, TensorSpec], inputs: Sequence[tuple[str, Mapping[str, TensorSpec]]], *, same_dtype: bool
) -> None:
    """Raise ValueError naming the input and tensor when keys, shapes or dtypes do not match."""
    if not inputs:
        raise ValueError("no experts / task vectors to merge")
    for label, specs in inputs:
        extra = [k for k in specs if k not in base]
        ignored = [k for k in extra if TIED_ALIASES.get(k) in base]
        for k in ignored:
            log.warning("%s: ignoring tensor %r, tied to %r in the base", label, k, TIED_ALIASES[k])
        extra = [k for k in extra if k not in ignored]
        if extra:
            raise ValueError(f"{label}: {len(extra)} tensor(s) the base does not have, e.g. {extra[:5]}")
        missing = [k for k in base if k not in specs]
        if missing:
            raise ValueError(f"{label}: {len(missing)} tensor(s) of the base missing, e.g. {missing[:5]}")
        for key, b in base.items():
            s = specs[key]
            if s.shape != b.shape:
                raise ValueError(f"{label}: tensor {key!r} has shape {list(s.shape)}, the base has {list(b.shape)}")
            if same_dtype and s.dtype != b.dtype:
                raise ValueError(f"{label}: tensor {key!r} has dtype {s.dtype}, the base has {b.dtype}")
            if not same_dtype and b.is_float and not s.is_float:
                raise ValueError(f"{label}: tensor {key!r} has dtype {s.dtype}; task vectors must be floating point")


# ---------------------------------------------------------------------------------------------
# The merge loop
# ---------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process' peak resident memory in MiB: VmHWM (per address space, reset by exec), else
    ``ru_maxrss``, which for a process started by fork + exec (a Snakemake script) also counts the
    parent's resident memory at fork time."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def output_specs(base: Mapping[str, TensorSpec], delta_only: bool) -> dict[str, TensorSpec]:
    """The base's specs; float tensors become float32 for a delta-only output."""
    return {k: TensorSpec("F32", s.shape) if delta_only and s.is_float else s for k, s in base.items()}


def _as_method(method: MergeMethod | str) -> MergeMethod:
    return get_method(method) if isinstance(method, str) else method


def _rows_shape(shape: torch.Size, rows: slice | None) -> tuple[int, ...]:
    if rows is None:
        return tuple(shape)
    return (rows.stop - rows.start, *shape[1:])


_DEVICE: torch.device | None = None  # merging.device while ``on_device`` is active (None: the CPU)


@contextlib.contextmanager
def on_device(device):
    """Within the block, methods that may (``device_capable``: the SVD / Newton-Schulz ones) merge
    each tensor on ``device``: the base tensor and one tensor per expert are copied there, the
    merged tensor back, so the streaming bounds hold on the device too (one tensor at a time).
    ``None`` or a CPU device: everything as before."""
    global _DEVICE
    prev = _DEVICE
    _DEVICE = None if device is None or torch.device(device).type == "cpu" else torch.device(device)
    try:
        yield
    finally:
        _DEVICE = prev


def merged_deltas(
    method: MergeMethod, src: TensorSource, ctx: TensorContext
) -> Iterator[tuple[slice | None, torch.Tensor]]:
    """(rows, Δ rows) for one tensor: chunk by chunk if the method streams, else all at once
    (on the merging device for a ``device_capable`` method, see ``on_device``)."""
    stream = getattr(method, "merge_stream", None)
    if stream is None:
        if _DEVICE is not None and getattr(method, "device_capable", False):
            base, deltas = src.base().to(_DEVICE), [d.to(_DEVICE) for d in src.deltas()]
            delta = method.merge_tensor(base, deltas, ctx).to("cpu")
            del base, deltas
        else:
            delta = method.merge_tensor(src.base(), src.deltas(), ctx)
        if tuple(delta.shape) != tuple(src.shape):
            raise RuntimeError(
                f"merge method {method.name!r} returned shape {tuple(delta.shape)} for tensor {ctx.key!r}, "
                f"expected {tuple(src.shape)}"
            )
        yield None, delta.float()
        return
    it = iter(stream(src, ctx))
    end = object()
    for rows in src.chunks():
        delta = next(it, end)
        if delta is end:
            raise RuntimeError(f"merge method {method.name!r} produced too few chunks for tensor {ctx.key!r}")
        if tuple(delta.shape) != _rows_shape(src.shape, rows):
            raise RuntimeError(
                f"merge method {method.name!r} returned a chunk of shape {tuple(delta.shape)} for tensor "
                f"{ctx.key!r}, expected {_rows_shape(src.shape, rows)}"
            )
        yield rows, delta.float()
    if next(it, end) is not end:
        raise RuntimeError(f"merge method {method.name!r} produced too many chunks for tensor {ctx.key!r}")


def run_merge(
    method: MergeMethod,
    base_specs: Mapping[str, TensorSpec],
    out_specs: Mapping[str, TensorSpec],
    make_source: Callable[[str], TensorSource],
    read_base_raw: Callable[[str], torch.Tensor],
    sink: Any,
    *,
    seed: int,
    delta_only: bool,
    progress: bool,
) -> None:
    """Merge every tensor of the base, in order, into ``sink.write(key, piece)``."""
    bar = tqdm(base_specs.items(), total=len(base_specs), desc=f"merge {method.name}", unit="tensor",
               disable=not progress, mininterval=1.0)  # fmt: skip
    for key, spec in bar:
        if not spec.is_float:
            raw = read_base_raw(key)
            sink.write(key, torch.zeros_like(raw) if delta_only else raw)
            continue
        if math.prod(spec.shape) == 0:
            sink.write(key, torch.empty(spec.shape, dtype=out_specs[key].torch_dtype, device="cpu"))
            continue
        src = make_source(key)
        ctx = TensorContext(key, is_matrix(key, torch.empty(spec.shape, device="meta")), seed)
        out_dtype = out_specs[key].torch_dtype
        for rows, delta in merged_deltas(method, src, ctx):
            lo, hi = (
                torch.aminmax(delta)
                if delta.numel()
                else (torch.zeros((), device="cpu"), torch.zeros((), device="cpu"))
            )
            if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):  # NaN and ±inf show in the extremes
                raise ValueError(f"merge method {method.name!r} produced non-finite values in tensor {key!r}")
            piece = delta if delta_only else src.base(rows) + delta
            sink.write(key, piece.to(out_dtype))


def _metadata(
    method: MergeMethod,
    experts: list[str],
    seed: int,
    delta_only: bool,
    extra: Mapping[str, Any] | None,
    prov: dict,
) -> dict[str, str]:
    meta: dict[str, Any] = {
        "format": "pt",
        "method": method.name,
        "hparams": method.hparams,
        "experts": experts,
        "seed": seed,
        "delta_only": delta_only,
        "provenance": prov,
    }
    meta.update(extra or {})
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str) for k, v in meta.items()}


def _merge_checkpoints(
    base_path: str | Path,
    input_paths: Sequence[str | Path],
    method: MergeMethod | str,
    out_path: str | Path,
    *,
    inputs_are_weights: bool,
    seed: int,
    delta_only: bool,
    metadata: Mapping[str, Any] | None,
    progress: bool,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    method = _as_method(method)
    kind = "expert" if inputs_are_weights else "task vector"
    base = Checkpoint(base_path, f"base {base_path}")
    inputs = [Checkpoint(p, f"{kind} {i} ({p})") for i, p in enumerate(input_paths)]
    check_inputs(base.specs, [(c.label, c.specs) for c in inputs], same_dtype=inputs_are_weights)
    out_specs = output_specs(base.specs, delta_only)
    experts = [Path(p).name.removesuffix(".safetensors") for p in input_paths]
    prov = provenance()
    meta = _metadata(method, experts, seed, delta_only, metadata, prov)
    try:
        with atomic_path(out_path) as tmp, SafetensorsWriter(tmp, out_specs, meta) as writer:
            run_merge(
                method, base.specs, out_specs,
                lambda key: FileSource(key, base, inputs, inputs_are_weights),
                lambda key: base.read(key),
                writer, seed=seed, delta_only=delta_only, progress=progress,
            )  # fmt: skip
    finally:
        base.close()
        for c in inputs:
            c.close()
    return {
        "method": method.name,
        "hparams": method.hparams,
        "experts": json.loads(meta["experts"]),
        "inputs": [str(p) for p in input_paths],
        "base": str(base_path),
        "seed": seed,
        "delta_only": delta_only,
        "streaming": hasattr(method, "merge_stream"),
        "n_tensors": len(out_specs),
        "n_params": sum(math.prod(s.shape) for s in out_specs.values()),
        "out_path": str(out_path),
        "wall_s": round(time.perf_counter() - t0, 3),
        "provenance": prov,
    }


def merge_files(
    base_weights: str | Path,
    task_vector_paths: Sequence[str | Path],
    method: MergeMethod | str,
    out_path: str | Path,
    *,
    seed: int = 0,
    delta_only: bool = False,
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Merge task-vector files into ``out_path`` (θ_0 + Δ in the base dtype, or Δ in float32).

    ``base_weights``: a safetensors file or a model directory. ``metadata`` entries are added to
    (and may override, e.g. ``experts``) the file's metadata. Returns an info dict (method,
    hparams, experts, seed, counts, wall time, provenance).
    """
    return _merge_checkpoints(
        base_weights, task_vector_paths, method, out_path, inputs_are_weights=False,
        seed=seed, delta_only=delta_only, metadata=metadata, progress=progress,
    )  # fmt: skip


def merge_models(
    base_dir: str | Path,
    expert_dirs: Sequence[str | Path],
    method: MergeMethod | str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    delta_only: bool = False,
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Merge full fine-tuned checkpoints (τ_i computed on the fly) into a loadable HF directory.

    ``out_dir`` gets the base directory's configuration and tokenizer files, ``model.safetensors``
    (or ``delta.safetensors`` with ``delta_only``) and ``merge_info.json`` (which lists them);
    written into a fresh temporary directory beside ``out_dir`` and moved in at the end. An
    existing ``out_dir`` must be empty, or be a previous output of this function and
    ``overwrite`` be true (see ``check_output_dir``): nothing else is ever deleted.
    """
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    if not (base_dir / "config.json").is_file():
        what = (
            "a file" if base_dir.is_file() else ("a folder without config.json" if base_dir.is_dir() else "not found")
        )
        raise ValueError(
            f"--base {base_dir}: {what}; the output is the base model with merged weights, so the base must be "
            "a Hugging Face model folder (config.json, weights, tokenizer files). To merge bare safetensors "
            "files, use speechmerge.merging.merge_files"
        )
    protected = {Path(p).resolve() for p in (base_dir, *expert_dirs)}
    if out_dir.resolve() in protected:
        raise ValueError(f"output directory {out_dir} is one of the inputs")
    check_output_dir(out_dir, overwrite=overwrite)
    with atomic_path(out_dir, is_dir=True) as tmp:
        copy_config_files(base_dir, tmp)
        name = "delta.safetensors" if delta_only else WEIGHTS_NAME
        info = _merge_checkpoints(
            base_dir, expert_dirs, method, tmp / name, inputs_are_weights=True,
            seed=seed, delta_only=delta_only, metadata=metadata, progress=progress,
        )  # fmt: skip
        info["out_path"] = str(out_dir / name)
        info["files"] = sorted([f.name for f in tmp.iterdir()] + [MERGE_INFO_NAME])
        write_json(tmp / MERGE_INFO_NAME, info)
        check_output_dir(out_dir, overwrite=overwrite)  # nothing has appeared there meanwhile
    return info


MERGE_INFO_NAME = "merge_info.json"


def copy_config_files(model_dir: Path, dest: Path) -> None:
    """Copy a model folder's configuration, generation config and tokenizer files to ``dest``:
    not its weights (any format), shard index, run records (``*_info.json``, logs, plots) or
    import provenance files. Used wherever a new model folder takes a base's configuration."""
    for f in sorted(Path(model_dir).iterdir()):
        if (
            f.is_file()
            and not f.name.endswith(_NOT_CONFIG_SUFFIXES)
            and f.name != INDEX_NAME
            and not f.name.endswith("_info.json")
            and not is_stamp(f.name)
        ):
            shutil.copy2(f, dest / f.name)


def check_output_dir(out_dir: str | Path, *, overwrite: bool) -> None:
    """Raise ValueError naming ``out_dir`` unless writing a merge there deletes nothing of the user's.

    Allowed: a path that does not exist, an empty directory, or (with ``overwrite``) a previous
    output of ``merge_models``: a directory whose ``merge_info.json`` lists every file in it.
    """
    out_dir = Path(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: exists and is not a directory; refusing to replace it")
    entries = sorted(p.name for p in out_dir.iterdir())
    if not entries:
        return
    listed = None
    try:
        listed = set(json.loads((out_dir / MERGE_INFO_NAME).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if listed is None:
        raise ValueError(
            f"--out {out_dir}: directory is not empty ({len(entries)} entries, e.g. {entries[:3]}) and is not a "
            f"speechmerge merge output (no {MERGE_INFO_NAME} listing its files); refusing to replace it. "
            "Choose a new or empty directory."
        )
    foreign = [e for e in entries if e not in listed or (out_dir / e).is_dir()]
    if foreign:
        raise ValueError(
            f"--out {out_dir}: holds a previous merge plus files it did not write ({foreign[:5]}); "
            "refusing to replace it. Move those files or choose another directory."
        )
    if not overwrite:
        raise ValueError(f"--out {out_dir}: holds a previous merge; pass --overwrite to replace it")


def merge_state_dicts(
    base_sd: Mapping[str, torch.Tensor],
    task_vector_sds: Sequence[Mapping[str, torch.Tensor]],
    method: MergeMethod | str,
    seed: int = 0,
    *,
    delta_only: bool = False,
) -> dict[str, torch.Tensor]:
    """In-memory merge with the same checks, chunking and arithmetic as ``merge_files``."""
    method = _as_method(method)

    def specs_of(sd: Mapping[str, torch.Tensor], label: str) -> dict[str, TensorSpec]:
        out = {}
        for k, t in sd.items():
            if t.dtype not in DTYPE_NAMES:
                raise ValueError(f"{label}: tensor {k!r} has unsupported dtype {t.dtype}")
            out[k] = TensorSpec(DTYPE_NAMES[t.dtype], tuple(t.shape))
        return out

    base_specs = specs_of(base_sd, "base")
    labels = [f"task vector {i}" for i in range(len(task_vector_sds))]
    for label, sd in [("base", base_sd), *zip(labels, task_vector_sds)]:
        for k, t in sd.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{label}: non-finite values (NaN or Inf) in tensor {k!r}")
    check_inputs(base_specs, [(lb, specs_of(sd, lb)) for lb, sd in zip(labels, task_vector_sds)], same_dtype=False)
    out_specs = output_specs(base_specs, delta_only)
    sink = MemorySink()
    run_merge(
        method, base_specs, out_specs,
        lambda key: InMemorySource(key, base_sd[key], [sd[key] for sd in task_vector_sds]),
        lambda key: base_sd[key],
        sink, seed=seed, delta_only=delta_only, progress=False,
    )  # fmt: skip
    return sink.result(out_specs)


__all__ = [
    "FileSource", "MemorySink", "check_inputs", "check_output_dir", "merge_files", "merge_models", "merge_state_dicts",
    "peak_rss_mb",
]  # fmt: skip
