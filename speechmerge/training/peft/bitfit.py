"""``bitfit`` — only bias vectors (Ben Zaken et al. 2022): every parameter whose name ends in
``.bias`` (attention/MLP linears, layer norms, the two encoder convolutions). Whisper's k_proj
has no bias."""

from speechmerge.training.peft.base import PeftMethod, register


@register
class BitFit(PeftMethod):
    name = "bitfit"
    label = "BitFit"
    defaults = {}

    def select_trainable(self) -> None:
        for n, p in self.whisper.named_parameters():
            p.requires_grad_(n.endswith(".bias"))
