"""The one signature every merging method implements, and the registry that names them.

A method merges *one tensor at a time*: it sees the base tensor theta_0 and the N task vectors
tau_i = theta_i - theta_0 of that tensor (float32, same shape) and returns the merged delta
Delta, so that the merged weight is theta_0 + Delta. Methods that are defined on the experts'
weights (SOUP, Karcher, Multi-SLERP, Model Stock) reconstruct theta_i = theta_0 + tau_i
themselves. The streaming engine (``speechmerge.merging.engine``) feeds tensors one by one, so
no method ever holds more than one tensor per expert.

Adding a method = one module in ``speechmerge/merging/methods/`` with a subclass decorated by
``@register`` that sets ``name``, ``label`` (how tables show it), ``reference_url`` (the paper or
reference code), ``defaults`` and ``source``; a method with hyperparameters also sets ``grid``
(the values its dev-split selection searches, ``grid_source`` says where they come from) and,
when its merged delta is exactly proportional to one of them, ``scale_param`` (then every value
of that parameter costs one merge: ``speechmerge.merging.grid``). ``speechmerge.merging.methods`` imports every module
of its package, so the method is then available to the ``merge`` rule, the config, the report and
the CLI with no other edit.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import torch

# 2-D linear weights of attention (self and cross) and MLP blocks of a HF Whisper model.
MATRIX_PATTERN = re.compile(
    r"(^|\.)(self_attn|encoder_attn)\.(q_proj|k_proj|v_proj|out_proj)\.weight$|(^|\.)(fc1|fc2)\.weight$"
)


def is_matrix(key: str, tensor: torch.Tensor) -> bool:
    """True for the attention / MLP linear weights that subspace and pruning methods act on."""
    return tensor.ndim == 2 and bool(MATRIX_PATTERN.search(key))


@dataclass(frozen=True)
class TensorContext:
    """What a method may know about the tensor besides its values."""

    key: str
    is_matrix: bool
    seed: int = 0

    def generator(self) -> torch.Generator:
        """A generator seeded from (seed, tensor name): the same on every run and in any order."""
        g = torch.Generator()
        g.manual_seed((int(self.seed) * 1_000_003 + zlib.crc32(self.key.encode())) % (2**63))
        return g


class MergeMethod:
    """Base class. Subclasses set ``name`` (config and file names), ``label`` (tables and
    figures), ``reference_url``, ``defaults`` (paper defaults) and ``source`` (citation)."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    reference_url: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    source: ClassVar[str] = ""
    # The dev-selection search grid: parameter -> values (each in the method's own units);
    # empty for a method without hyperparameters worth tuning.
    grid: ClassVar[dict[str, list[Any]]] = {}
    grid_source: ClassVar[str] = ""
    # A parameter Δ is proportional to (Δ(λ) = λ · Δ(1), e.g. a final scaling λ), or None.
    scale_param: ClassVar[str | None] = None
    # Whether merge_tensor may run on a GPU (merging.device): the SVD / Newton-Schulz methods, whose
    # factorisations dominate; it must create every tensor where its inputs are. Element-wise
    # methods (and those drawing random masks on the host) stay on the CPU.
    device_capable: ClassVar[bool] = False

    def __init__(self, **hparams: Any) -> None:
        unknown = sorted(set(hparams) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"merge method {self.name!r}: unknown hyperparameter(s) {unknown}; known: {sorted(self.defaults)}"
            )
        self.hparams: dict[str, Any] = {**self.defaults, **hparams}
        self.validate()

    def validate(self) -> None:
        """Check hyperparameter values; raise ValueError naming the key."""

    def resolved_hparams(self, n_tasks: int) -> dict[str, Any]:
        """The hyperparameters as applied to ``n_tasks`` task vectors: defaults that depend on N
        (e.g. LoRS' ``scaling`` None = 1/N) filled in. Reports use it to place the default merge
        on a sweep."""
        return dict(self.hparams)

    def merge_tensor(self, base: torch.Tensor, deltas: Sequence[torch.Tensor], ctx: TensorContext) -> torch.Tensor:
        """Return the merged delta for one tensor (same shape as ``base``, float32)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hparams})"


REGISTRY: dict[str, type[MergeMethod]] = {}


def register(cls: type[MergeMethod]) -> type[MergeMethod]:
    for attr in ("name", "label", "reference_url"):
        if not getattr(cls, attr):
            raise ValueError(f"merge method class {cls.__name__} has no {attr}")
    unknown = sorted(set(cls.grid) - set(cls.defaults))
    if unknown:
        raise ValueError(f"merge method {cls.name!r}: grid names unknown hyperparameter(s) {unknown}")
    if cls.grid and not cls.grid_source:
        raise ValueError(f"merge method {cls.name!r}: a grid needs its grid_source")
    if cls.scale_param is not None and cls.scale_param not in cls.defaults:
        raise ValueError(f"merge method {cls.name!r}: scale_param {cls.scale_param!r} is not a hyperparameter")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"merge method {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def get_method(name: str, hparams: Mapping[str, Any] | None = None) -> MergeMethod:
    from speechmerge.merging import methods  # noqa: F401  (imports register every method)

    if name not in REGISTRY:
        raise KeyError(f"unknown merge method {name!r}; available: {sorted(REGISTRY)}")
    return REGISTRY[name](**dict(hparams or {}))
