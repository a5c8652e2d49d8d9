"""``adalora`` — ``peft.AdaLoraConfig`` (Zhang et al. 2023): ΔW = (lora_alpha / init_r) B diag(E) A
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
"""

from __future__ import annotations

import torch
from torch import nn

from speechmerge.training.peft.base import register
from speechmerge.training.peft.lora import WithPeftLibrary
from speechmerge.training.s2lora import DEFAULT_TARGETS

ADALORA_REFERENCE_STEPS = 2000


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


@register
class AdaLora(WithPeftLibrary):
    name = "adalora"
    label = "AdaLoRA"
    ranks = True
    defaults = {
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
    }

    @classmethod
    def check(cls, h: dict) -> None:
        cls.number(h, "init_r", lo=1, integer=True)
        cls.number(h, "target_r", lo=1, hi=h["init_r"], integer=True)
        cls.number(h, "lora_alpha", lo=0, lo_open=True)
        cls.number(h, "lora_dropout", lo=0, hi=1, hi_open=True)
        cls.number(h, "orth_reg_weight", lo=0)
        for key in ("beta1", "beta2"):
            cls.number(h, key, lo=0, hi=1, hi_open=True)
        for key in ("tinit", "tfinal"):
            if h[key] is not None:
                cls.number(h, key, lo=0, integer=True)
        if h["deltaT"] is not None:
            cls.number(h, "deltaT", lo=1, integer=True)
        cls.check_targets(h)

    def __init__(self, whisper: nn.Module, hparams: dict, total_steps: int = 1):
        self.schedule = adalora_schedule(int(total_steps), hparams["tinit"], hparams["tfinal"], hparams["deltaT"])
        super().__init__(whisper, hparams, total_steps)

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

    @classmethod
    def check_steps(cls, h: dict, steps: int) -> None:
        adalora_schedule(steps, h["tinit"], h["tfinal"], h["deltaT"])

    def finalize(self) -> dict:
        return {"adalora_schedule": dict(self.schedule, total_step=self.total_steps)}

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
