"""``full`` — full fine-tuning: every parameter except the encoder's fixed sinusoidal positions
(``model.encoder.embed_positions.weight``, frozen by Whisper's design); proj_out is tied to the
decoder token embedding and counts once."""

from speechmerge.training.peft.base import PeftMethod, register


@register
class Full(PeftMethod):
    name = "full"
    label = "Full fine-tuning"
    defaults = {}
