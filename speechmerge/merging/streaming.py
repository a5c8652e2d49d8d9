"""The chunked ("streaming") protocol every merging method can implement.

``MergeMethod.merge_tensor(base, deltas, ctx)`` needs every expert's whole tensor at once, so its
memory is N tensors; for Whisper's token embedding (51865 x d_model, a third of Whisper-base)
that is more than the whole rest of the merge. A ``StreamingMethod`` instead implements
``merge_stream(src, ctx)``: it reads rows of the base and of the task vectors through a
``TensorSource`` (any number of passes, e.g. one for statistics such as a Gram matrix or a top-k
threshold, one to combine) and yields the merged delta chunk by chunk, for the row ranges
``src.chunks()`` in order. ``merge_tensor`` is kept (it runs ``merge_stream`` over in-memory
tensors with the same chunking), so both paths give bit-identical results. The engine uses
``merge_stream`` when a method has it and ``merge_tensor`` otherwise.

``MatrixOrElementwiseMethod`` is the base of the subspace / pruning methods (Iso-*, TSV-M*,
LoRS*): whole attention/MLP matrices, every other tensor element-wise by chunks.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from speechmerge.merging.base import MergeMethod, TensorContext

# Elements per expert per chunk (4 MiB of float32). Tensors up to this size are one chunk.
CHUNK_ELEMS = 1 << 20


def row_chunks(shape: Sequence[int], chunk_elems: int | None = None) -> list[slice | None]:
    """Row ranges (over dim 0) of at most ``chunk_elems`` elements (at least one row each).

    A 0-d tensor is a single chunk ``None`` (= the whole tensor). Depends only on the shape, so
    every run, and the in-memory and streaming paths, cut a tensor the same way.
    """
    if len(shape) == 0:
        return [None]
    chunk_elems = CHUNK_ELEMS if chunk_elems is None else chunk_elems
    rows = int(shape[0])
    row_numel = max(1, math.prod(int(s) for s in shape[1:]))
    step = max(1, chunk_elems // row_numel)
    return [slice(a, min(a + step, rows)) for a in range(0, rows, step)] or [slice(0, 0)]


class TensorSource:
    """Read-only float32 access, by row range, to one tensor of the base and of N task vectors.

    ``rows`` is a slice over dim 0 or None (the whole tensor). Returned tensors may be shared
    (cached or views of the caller's data): never modify them in place.
    """

    key: str
    shape: torch.Size
    n: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def chunks(self) -> list[slice | None]:
        return row_chunks(self.shape)

    def base(self, rows: slice | None = None) -> torch.Tensor:
        raise NotImplementedError

    def delta(self, i: int, rows: slice | None = None) -> torch.Tensor:
        raise NotImplementedError

    def deltas(self, rows: slice | None = None) -> list[torch.Tensor]:
        return [self.delta(i, rows) for i in range(self.n)]


class InMemorySource(TensorSource):
    """A ``TensorSource`` over tensors already in memory (tests, ``merge_tensor``)."""

    def __init__(self, key: str, base: torch.Tensor, deltas: Sequence[torch.Tensor]) -> None:
        if len(deltas) == 0:
            raise ValueError(f"tensor {key!r}: no task vectors given")
        for i, d in enumerate(deltas):
            if tuple(d.shape) != tuple(base.shape):
                raise ValueError(
                    f"tensor {key!r}: task vector {i} has shape {tuple(d.shape)}, base has {tuple(base.shape)}"
                )
        self.key, self.shape, self.n = key, base.shape, len(deltas)
        self._base, self._deltas = base, list(deltas)

    @staticmethod
    def _rows(t: torch.Tensor, rows: slice | None) -> torch.Tensor:
        return (t if rows is None else t[rows]).float()

    def base(self, rows: slice | None = None) -> torch.Tensor:
        return self._rows(self._base, rows)

    def delta(self, i: int, rows: slice | None = None) -> torch.Tensor:
        return self._rows(self._deltas[i], rows)


class StreamingMethod(MergeMethod):
    """A method that merges chunk by chunk (see the module docstring)."""

    def merge_stream(self, src: TensorSource, ctx: TensorContext) -> Iterator[torch.Tensor]:
        """Yield the merged delta (float32) for each row range of ``src.chunks()``, in order."""
        raise NotImplementedError

    def merge_tensor(self, base: torch.Tensor, deltas: Sequence[torch.Tensor], ctx: TensorContext) -> torch.Tensor:
        src = InMemorySource(ctx.key, base, deltas)
        parts = list(self.merge_stream(src, ctx))
        if len(parts) == 1:
            return parts[0].reshape(base.shape)
        return torch.cat(parts, 0)

    # -- helpers for subclasses ------------------------------------------------------------
    def sparsify_here(self, ctx: TensorContext) -> bool:
        """False when ``matrices_only`` is set and the tensor is not an attention/MLP matrix."""
        return not (self.hparams.get("matrices_only") and not ctx.is_matrix)


NON_MATRIX_RULES = ("mean", "sum")


class MatrixOrElementwiseMethod(StreamingMethod):
    """Attention/MLP matrices (``ctx.is_matrix``) are merged whole by ``merge_matrix`` (an SVD
    needs the whole matrix; Whisper-base's largest, 2048×512, is one engine chunk anyway); every
    other tensor by ``merge_elementwise`` chunk by chunk, so the 51865×d token embedding never
    has to be held N times in memory. ``merge_tensor`` (in-memory) gives bit-identical results.
    """

    def merge_matrix(self, taus: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def merge_elementwise(self, taus: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def merge_stream(self, src: TensorSource, ctx: TensorContext) -> Iterator[torch.Tensor]:
        if ctx.is_matrix:
            if len(src.shape) != 2:
                raise ValueError(
                    f"merge method {self.name!r}: tensor {ctx.key!r} is marked as a matrix "
                    f"but has shape {tuple(src.shape)}"
                )
            delta = self.merge_matrix([d.float() for d in src.deltas(None)]).float()
            for rows in src.chunks():
                yield delta if rows is None else delta[rows]
        else:
            for rows in src.chunks():
                yield self.merge_elementwise([d.float() for d in src.deltas(rows)]).float()


def combine(deltas: Sequence[torch.Tensor], rule: str) -> torch.Tensor:
    """'mean' = (1/N) Σ τ_i, 'sum' = Σ τ_i; accumulated in place (no N-fold stack in memory)."""
    acc = deltas[0].float().clone()
    for d in deltas[1:]:
        acc += d.float()
    if rule == "mean":
        acc /= len(deltas)
    elif rule != "sum":
        raise ValueError(f"unknown non-matrix rule {rule!r}; known: {NON_MATRIX_RULES}")
    return acc
