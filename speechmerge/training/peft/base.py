"""What a fine-tuning method is, and the registry that finds one by name.

A method (``full``, ``bitfit``, ``lora``, ``adalora``, ``s2lora``) is one module in this package
holding one ``PeftMethod`` subclass decorated with ``@register``: its ``name``, the ``label`` of
its row in the tables, ``defaults`` (every hyperparameter it takes, under ``peft:`` in the
config), ``check`` (value checks naming ``peft.<key>``), whether it learns a rank allocation
(``ranks``), and how it is applied to a ``WhisperForConditionalGeneration`` in place:

* ``select_trainable``: which parameters train (and any modules it adds);
* ``named_trainable``: the trainable parameters by stable name;
* ``regulariser``: an extra loss added once per optimizer step (None: none);
* ``after_optimizer_step(step)``: a hook after ``optimizer.step()`` (0-based step index);
* ``extra_state`` / ``load_extra_state``: method state beyond the parameters, for checkpoints;
* ``finalize``: a post-training step (pruning), returning facts for ``train_info.json``;
* ``rank_allocation``: the learned rank per adapted module (None: none);
* ``merged``: the plain Whisper model with the update in its weights.

``register`` checks the metadata when the module is imported. ``method_hparams`` (used by the
trainer's spec, hence at plan time too) fills the defaults and rejects unknown keys and bad
values, naming ``peft.<key>``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from speechmerge.checks import number_ok

#: name -> method class, filled by ``@register`` (importing ``speechmerge.training.peft`` imports every method).
REGISTRY: dict[str, type["PeftMethod"]] = {}
FROZEN_IN_FULL = ("model.encoder.embed_positions.weight",)


class PeftMethod:
    """Full fine-tuning (and the base of the other methods): every parameter trains except the
    encoder's fixed sinusoidal positions."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    ranks: ClassVar[bool] = False  # learns a rank allocation (rank_allocation.json, the report's figure)

    def __init__(self, whisper: nn.Module, hparams: dict, total_steps: int = 1):
        self.whisper = whisper
        self.hparams = hparams
        self.total_steps = int(total_steps)
        self.select_trainable()

    # --- what a config may give ---------------------------------------------------------
    @classmethod
    def check(cls, h: dict) -> None:
        """Value checks of the hyperparameters (``ValueError`` naming ``peft.<key>``)."""

    @classmethod
    def check_steps(cls, h: dict, steps: int) -> None:
        """Checks that need the number of training steps (a schedule), at plan time."""

    @classmethod
    def number(
        cls,
        h: dict,
        key: str,
        *,
        lo: float | None = None,
        hi: float | None = None,
        lo_open: bool = False,
        hi_open: bool = False,
        integer: bool = False,
    ) -> None:
        """``h[key]`` is a finite number within the bounds, else a ``ValueError`` naming ``peft.<key>``."""
        v = h[key]
        if not number_ok(v, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, integer=integer):
            lo_s = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
            hi_s = "" if hi is None else f"{'<' if hi_open else '<='} {hi}"
            kind = "an integer" if integer else "a number"
            bounds = " and ".join(b for b in (lo_s, hi_s) if b)
            raise ValueError(
                f"method {cls.name!r}: peft.{key} must be {kind}{' ' + bounds if bounds else ''}, got {v!r}"
            )

    @classmethod
    def check_targets(cls, h: dict) -> None:
        targets = h["target_modules"]
        if not isinstance(targets, (list, tuple)) or not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(
                f"method {cls.name!r}: peft.target_modules must be a non-empty list of module names, got {targets!r}"
            )

    # --- what is trained --------------------------------------------------------------
    def select_trainable(self) -> None:
        for n, p in self.whisper.named_parameters():
            p.requires_grad_(n not in FROZEN_IN_FULL)

    def named_trainable(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.whisper.named_parameters() if p.requires_grad}

    # --- hooks ------------------------------------------------------------------------
    def regulariser(self) -> torch.Tensor | None:
        return None

    def after_optimizer_step(self, step: int) -> None:
        """Called after ``optimizer.step()`` with the 0-based step index, before zero_grad."""

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        return {}, {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        pass

    # --- after training ---------------------------------------------------------------
    def finalize(self) -> dict:
        return {}

    def rank_allocation(self) -> dict[str, int] | None:
        return None

    def merged(self) -> nn.Module:
        return self.whisper


def register(cls: type[PeftMethod]) -> type[PeftMethod]:
    """Class decorator: check the method's metadata and add it to ``REGISTRY``."""
    where = f"fine-tuning method {cls.__module__}.{cls.__name__}"
    if not cls.name or not cls.label:
        raise TypeError(f"{where}: needs a name and a label")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise TypeError(f"{where}: name {cls.name!r} is already registered by {REGISTRY[cls.name].__module__}")
    if not isinstance(cls.defaults, dict):
        raise TypeError(f"{where}: defaults must be a dict")
    cls.check(dict(cls.defaults))  # the defaults pass the method's own checks
    REGISTRY[cls.name] = cls
    return cls


def _registry() -> dict[str, type[PeftMethod]]:
    import speechmerge.training.peft  # noqa: F401  (imports register every method)

    return REGISTRY


def peft_method_names() -> tuple[str, ...]:
    """Every registered method, in registration order (full, bitfit, lora, adalora, s2lora)."""
    return tuple(_registry())


def get_peft_method(name: str) -> type[PeftMethod]:
    methods = _registry()
    if name not in methods:
        raise ValueError(f"unknown fine-tuning method {name!r}; expected one of {tuple(methods)}")
    return methods[name]


def method_hparams(method: str, given: dict | None) -> dict[str, Any]:
    """Defaults of ``method`` updated with ``given``; unknown keys and bad values are errors."""
    cls = get_peft_method(method)
    given = dict(given or {})
    unknown = sorted(set(given) - set(cls.defaults))
    if unknown:
        raise KeyError(f"method {method!r}: unknown hyperparameters {unknown}; known: {sorted(cls.defaults)}")
    h = {**cls.defaults, **given}
    cls.check(h)
    return h


def build_method(method: str, whisper: nn.Module, hparams: dict | None, total_steps: int) -> PeftMethod:
    """Apply ``method`` to ``whisper`` (in place) and return its handle."""
    return get_peft_method(method)(whisper, method_hparams(method, hparams), total_steps)


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (tied tensors once)."""
    return sum(p.numel() for p in model.parameters())
