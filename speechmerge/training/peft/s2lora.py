"""``s2lora`` — sparsely shared LoRA (``speechmerge.training.s2lora``, own implementation):
low-rank factors shared per weight shape, per-layer sparse rank coefficients with an L1 penalty,
pruned after training."""

from __future__ import annotations

import logging

import torch
from torch import nn

from speechmerge.training.peft.base import PeftMethod, register
from speechmerge.training.s2lora import DEFAULT_TARGETS, S2LoRA

log = logging.getLogger(__name__)


@register
class S2LoraMethod(PeftMethod):
    name = "s2lora"
    label = "S2-LoRA"
    ranks = True
    defaults = {
        "r": 8,
        "alpha": 16,
        "dropout": 0.1,
        "l1_weight": 1e-4,
        "threshold": 0.1,
        "target_modules": list(DEFAULT_TARGETS),
    }

    @classmethod
    def check(cls, h: dict) -> None:
        cls.number(h, "r", lo=1, integer=True)
        cls.number(h, "alpha", lo=0, lo_open=True)
        cls.number(h, "dropout", lo=0, hi=1, hi_open=True)
        cls.number(h, "l1_weight", lo=0)
        cls.number(h, "threshold", lo=0, hi=1, hi_open=True)
        cls.check_targets(h)

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
