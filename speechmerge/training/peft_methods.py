"""Which parameters a fine-tuning method trains, and how its update ends up in plain weights.

Methods (``METHODS``), all applied to a ``WhisperForConditionalGeneration`` in place:

* ``full``   -- every parameter except the encoder's fixed sinusoidal positions
  (``model.encoder.embed_positions.weight``, frozen by Whisper's design). proj_out is tied to
  the decoder token embedding and counts once.
* ``bitfit`` -- only bias vectors (Ben Zaken et al. 2022): every parameter whose name ends in
  ``.bias`` (attention/MLP linears, layer norms, the two encoder convolutions). Whisper's
  k_proj has no bias.
* ``lora``   -- ``peft.LoraConfig`` on ``q_proj k_proj v_proj out_proj fc1 fc2``:
  ΔW = (alpha / r) B A, A in R^{r x in}, B in R^{out x r}; trainable r (in + out) per layer.
* ``adalora`` -- ``peft.AdaLoraConfig`` (Zhang et al. 2023): ΔW = (lora_alpha / init_r) B diag(E) A
  (peft's SVD form; A = lora_A in R^{init_r x in}, E = lora_E in R^{init_r}, B = lora_B in
  R^{out x init_r}); trainable init_r (in + out) + init_r per layer; singular values E pruned by
  importance from ``tinit`` to ``total_step - tfinal``, every ``deltaT`` steps, down to a total
  budget of ``target_r`` x layers; loss += orth_reg_weight * mean over all A and B of
  ||A A^T - I||_F and ||B^T B - I||_F (peft's regulariser, computed here because the trainer
  computes its own loss).
  ``update_and_allocate(step)`` is called after every optimizer step and before the gradients
  are cleared (the order of peft's docstring and example), with the 0-based step index.
  Defaults follow peft's Whisper AdaLoRA example (init_r 12, target_r 4, tinit 200,
  tfinal 1000, deltaT 10, lora_alpha 32, lora_dropout 0.1, orth_reg_weight 0.5,
  beta1 = beta2 = 0.85). The example does not state its total number of steps; we take it
  as ``ADALORA_REFERENCE_STEPS`` = 2000, and unless tinit/tfinal/deltaT are given explicitly
  they are scaled to the configured steps T: tinit = round(0.1 T), tfinal = round(0.5 T),
  deltaT = max(1, round(T / 200)).
* ``s2lora`` -- ``speechmerge.training.s2lora`` (own implementation; shared factors per weight
  shape, per-layer sparse rank coefficients with an L1 penalty, pruned after training).

Every method exposes the same small interface (``Method``) to the trainer: the trainable
parameters by stable name, an extra regularisation term, a hook after each optimizer step,
what to do after training (prune), the merged plain Whisper model, and the learned rank
allocation for adalora / s2lora.

``method_hparams`` (used by ``TrainSpec.validate``, hence at plan time too) rejects unknown keys
and out-of-range values (``check_hparams``: ranks >= 1, AdaLoRA ``target_r`` <= ``init_r``,
dropouts in [0, 1), S2-LoRA ``l1_weight`` >= 0 and ``threshold`` in [0, 1)), naming ``peft.<key>``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from speechmerge.training.s2lora import DEFAULT_TARGETS, S2LoRA

log = logging.getLogger(__name__)

METHODS = ("full", "bitfit", "lora", "adalora", "s2lora")
FROZEN_IN_FULL = ("model.encoder.embed_positions.weight",)
ADALORA_REFERENCE_STEPS = 2000

DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {},
    "bitfit": {},
    "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": list(DEFAULT_TARGETS)},
    "adalora": {
        "init_r": 12,
        "target_r": 4,
        "tinit": None,
        "tfinal": None,
        "deltaT": None,
        "lora_alpha": 32,
        "lora_dropout": 0.1,
        "orth_reg_weight": 0.5,
        "beta1": 0.85,
        "beta2": 0.85,
        "target_modules": list(DEFAULT_TARGETS),
    },
    "s2lora": {
        "r": 8,
        "alpha": 16,
        "dropout": 0.1,
        "l1_weight": 1e-4,
        "threshold": 0.1,
        "target_modules": list(DEFAULT_TARGETS),
    },
}


def method_hparams(method: str, given: dict | None) -> dict[str, Any]:
    """Defaults of ``method`` updated with ``given``; unknown keys are an error."""
    if method not in METHODS:
        raise ValueError(f"unknown fine-tuning method {method!r}; expected one of {METHODS}")
    given = dict(given or {})
    unknown = sorted(set(given) - set(DEFAULTS[method]))
    if unknown:
        raise KeyError(f"method {method!r}: unknown hyperparameters {unknown}; known: {sorted(DEFAULTS[method])}")
    h = {**DEFAULTS[method], **given}
    check_hparams(method, h)
    return h


def _number(
    method: str,
    h: dict,
    key: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
) -> None:
    v = h[key]
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
    if ok and integer:
        ok = float(v) == int(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        lo_s = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
        hi_s = "" if hi is None else f"{'<' if hi_open else '<='} {hi}"
        kind = "an integer" if integer else "a number"
        bounds = " and ".join(b for b in (lo_s, hi_s) if b)
        raise ValueError(f"method {method!r}: peft.{key} must be {kind}{' ' + bounds if bounds else ''}, got {v!r}")


def check_hparams(method: str, h: dict) -> None:
    """Value checks of a method's hyperparameters; ValueError naming ``peft.<key>``."""
    if method == "lora":
        _number(method, h, "r", lo=1, integer=True)
        _number(method, h, "lora_alpha", lo=0, lo_open=True)
        _number(method, h, "lora_dropout", lo=0, hi=1, hi_open=True)
    elif method == "adalora":
        _number(method, h, "init_r", lo=1, integer=True)
        _number(method, h, "target_r", lo=1, hi=h["init_r"], integer=True)
        _number(method, h, "lora_alpha", lo=0, lo_open=True)
        _number(method, h, "lora_dropout", lo=0, hi=1, hi_open=True)
        _number(method, h, "orth_reg_weight", lo=0)
        for key in ("beta1", "beta2"):
            _number(method, h, key, lo=0, hi=1, hi_open=True)
        for key in ("tinit", "tfinal"):
            if h[key] is not None:
                _number(method, h, key, lo=0, integer=True)
        if h["deltaT"] is not None:
            _number(method, h, "deltaT", lo=1, integer=True)
    elif method == "s2lora":
        _number(method, h, "r", lo=1, integer=True)
        _number(method, h, "alpha", lo=0, lo_open=True)
        _number(method, h, "dropout", lo=0, hi=1, hi_open=True)
        _number(method, h, "l1_weight", lo=0)
        _number(method, h, "threshold", lo=0, hi=1, hi_open=True)
    if method in ("lora", "adalora", "s2lora"):
        targets = h["target_modules"]
        if not isinstance(targets, (list, tuple)) or not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(
                f"method {method!r}: peft.target_modules must be a non-empty list of module names, got {targets!r}"
            )


def adalora_schedule(total_steps: int, tinit=None, tfinal=None, deltaT=None) -> dict[str, int]:
    """tinit / tfinal / deltaT scaled from peft's example (200 / 1000 / 10 of 2000 steps)."""
    ref = ADALORA_REFERENCE_STEPS
    tinit = round(200 * total_steps / ref) if tinit is None else int(tinit)
    tfinal = round(1000 * total_steps / ref) if tfinal is None else int(tfinal)
    deltaT = max(1, round(10 * total_steps / ref)) if deltaT is None else int(deltaT)
    if tinit >= total_steps - tfinal:
        raise ValueError(
            f"AdaLoRA schedule leaves no budgeting phase: tinit={tinit}, tfinal={tfinal}, "
            f"total_step={total_steps} (need tinit < total_step - tfinal)"
        )
    return {"tinit": tinit, "tfinal": tfinal, "deltaT": deltaT}


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (tied tensors once)."""
    return sum(p.numel() for p in model.parameters())


class Method:
    """Full fine-tuning (and the base of the other methods)."""

    name = "full"

    def __init__(self, whisper: nn.Module, hparams: dict):
        self.whisper = whisper
        self.hparams = hparams
        self.select_trainable()

    # --- what is trained --------------------------------------------------------------
    def select_trainable(self) -> None:
        for n, p in self.whisper.named_parameters():
            p.requires_grad_(n not in FROZEN_IN_FULL)

    def named_trainable(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.whisper.named_parameters() if p.requires_grad}

    # --- hooks ------------------------------------------------------------------------
    def regulariser(self) -> torch.Tensor | None:
        """Extra loss added once per optimizer step (None: none)."""
        return None

    def after_optimizer_step(self, step: int) -> None:
        """Called after ``optimizer.step()`` with the 0-based step index, before zero_grad."""

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, json) of method state beyond the parameters, for checkpoints."""
        return {}, {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        pass

    # --- after training ---------------------------------------------------------------
    def finalize(self) -> dict:
        """Post-training step (S2-LoRA pruning); returns facts for train_info."""
        return {}

    def rank_allocation(self) -> dict[str, int] | None:
        return None

    def merged(self) -> nn.Module:
        """The plain Whisper model with the update in its weights."""
        return self.whisper


class BitFit(Method):
    name = "bitfit"

    def select_trainable(self) -> None:
        for n, p in self.whisper.named_parameters():
            p.requires_grad_(n.endswith(".bias"))


class _PeftMethod(Method):
    """LoRA-family methods through ``peft``; ``self.peft_model`` wraps the Whisper model."""

    def select_trainable(self) -> None:
        from peft import get_peft_model

        self.peft_model = get_peft_model(self.whisper, self.peft_config())
        # peft injects its layers in place: forwarding the inner Whisper model runs the adapters.
        self.whisper = self.peft_model.base_model.model

    def peft_config(self):
        raise NotImplementedError

    def named_trainable(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.whisper.named_parameters() if p.requires_grad}

    def merged(self) -> nn.Module:
        return self.peft_model.merge_and_unload()


class Lora(_PeftMethod):
    name = "lora"

    def rank_allocation(self) -> dict[str, int]:
        """LoRA's rank is fixed: r for every adapted layer."""
        from peft.tuners.lora import LoraLayer

        return {name: int(mod.r["default"]) for name, mod in self.whisper.named_modules() if isinstance(mod, LoraLayer)}

    def peft_config(self):
        from peft import LoraConfig

        h = self.hparams
        return LoraConfig(
            r=int(h["r"]),
            lora_alpha=h["lora_alpha"],
            lora_dropout=h["lora_dropout"],
            target_modules=list(h["target_modules"]),
            bias="none",
        )


class AdaLora(_PeftMethod):
    name = "adalora"

    def __init__(self, whisper: nn.Module, hparams: dict, total_steps: int):
        self.total_steps = int(total_steps)
        self.schedule = adalora_schedule(self.total_steps, hparams["tinit"], hparams["tfinal"], hparams["deltaT"])
        super().__init__(whisper, hparams)

    def peft_config(self):
        from peft import AdaLoraConfig

        h = self.hparams
        return AdaLoraConfig(
            init_r=int(h["init_r"]),
            target_r=int(h["target_r"]),
            beta1=h["beta1"],
            beta2=h["beta2"],
            lora_alpha=h["lora_alpha"],
            lora_dropout=h["lora_dropout"],
            orth_reg_weight=h["orth_reg_weight"],
            total_step=self.total_steps,
            target_modules=list(h["target_modules"]),
            **self.schedule,
        )

    @property
    def tuner(self):
        return self.peft_model.base_model

    def regulariser(self) -> torch.Tensor | None:
        """orth_reg_weight * mean over all lora_A of ||A A^T - I||_F and all lora_B of ||B^T B - I||_F."""
        weight = float(self.hparams["orth_reg_weight"])
        if weight == 0:
            return None
        terms = []
        for n, p in self.whisper.named_parameters():
            if not p.requires_grad:
                continue
            if ".lora_A." in n:
                gram = p @ p.T
            elif ".lora_B." in n:
                gram = p.T @ p
            else:
                continue
            eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
            terms.append(torch.linalg.matrix_norm(gram - eye, ord="fro"))
        return weight * torch.stack(terms).mean()

    def after_optimizer_step(self, step: int) -> None:
        self.tuner.update_and_allocate(step)

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        alloc = self.tuner.rankallocator
        tensors = {}
        for kind in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            for n, t in getattr(alloc, kind).items():
                tensors[f"{kind}|{n}"] = t.detach().contiguous()
        pattern = self.peft_model.peft_config["default"].rank_pattern
        return tensors, {"rank_pattern": pattern}

    def load_extra_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        alloc = self.tuner.rankallocator
        alloc.reset_ipt()
        for key, t in tensors.items():
            kind, n = key.split("|", 1)
            getattr(alloc, kind)[n] = t.clone()
        self.peft_model.peft_config["default"].rank_pattern = meta.get("rank_pattern")

    def rank_allocation(self) -> dict[str, int]:
        """Rank of each layer = non-zero singular values E (peft zeroes the pruned ones)."""
        from peft.tuners.adalora.layer import SVDLinear

        out = {}
        for name, mod in self.whisper.named_modules():
            if isinstance(mod, SVDLinear):
                out[name] = int(torch.count_nonzero(mod.lora_E["default"]))
        return out


class S2LoraMethod(Method):
    name = "s2lora"

    def select_trainable(self) -> None:
        h = self.hparams
        self.s2 = S2LoRA(
            self.whisper,
            r=int(h["r"]),
            alpha=float(h["alpha"]),
            dropout=float(h["dropout"]),
            target_modules=h["target_modules"],
        )

    def named_trainable(self) -> dict[str, nn.Parameter]:
        return self.s2.named_trainable()

    def regulariser(self) -> torch.Tensor | None:
        weight = float(self.hparams["l1_weight"])
        return weight * self.s2.l1_penalty() if weight else None

    def finalize(self) -> dict:
        stats = self.s2.prune(float(self.hparams["threshold"]))
        log.info(
            "S2-LoRA: %d of %d rank coefficients non-zero after pruning at |c| < %g x max |c| = %.3g (sparsity %.1f%%)",
            stats["nonzero"],
            stats["coefficients"],
            stats["threshold"],
            stats["cut"],
            100 * stats["sparsity"],
        )
        return {"s2lora_pruning": stats}

    def rank_allocation(self) -> dict[str, int]:
        return self.s2.rank_allocation()

    def merged(self) -> nn.Module:
        return self.s2.merge()


def build_method(method: str, whisper: nn.Module, hparams: dict | None, total_steps: int) -> Method:
    """Apply ``method`` to ``whisper`` (in place) and return its ``Method`` handle."""
    h = method_hparams(method, hparams)
    if method == "full":
        return Method(whisper, h)
    if method == "bitfit":
        return BitFit(whisper, h)
    if method == "lora":
        return Lora(whisper, h)
    if method == "adalora":
        return AdaLora(whisper, h, total_steps)
    return S2LoraMethod(whisper, h)
