"""``lora`` — ``peft.LoraConfig`` on ``q_proj k_proj v_proj out_proj fc1 fc2``:
ΔW = (alpha / r) B A, A in R^{r x in}, B in R^{out x r}; trainable r (in + out) per layer."""

from __future__ import annotations

from torch import nn

from speechmerge.training.peft.base import PeftMethod, register
from speechmerge.training.s2lora import DEFAULT_TARGETS


class WithPeftLibrary(PeftMethod):
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


@register
class Lora(WithPeftLibrary):
    name = "lora"
    label = "LoRA"
    defaults = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": list(DEFAULT_TARGETS)}

    @classmethod
    def check(cls, h: dict) -> None:
        cls.number(h, "r", lo=1, integer=True)
        cls.number(h, "lora_alpha", lo=0, lo_open=True)
        cls.number(h, "lora_dropout", lo=0, hi=1, hi_open=True)
        cls.check_targets(h)

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
