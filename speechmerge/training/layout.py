"""Memory layout of Whisper's encoder states during training.

Whisper's encoder transposes the convolutions' output (batch x channels x frames) into its
residual stream (batch x frames x channels) as a view, and every elementwise sum along the stream
keeps that transposed layout. Each layer norm then copies its input to a contiguous tensor,
forward and backward, and the residual sums run on strided memory. Making the stream contiguous
once, where it enters the first layer, removes those copies; the values are the same, only where
they lie in memory changes (``benchmarks/train_bench.py --profile --layout transposed`` against ``--profile``).
"""

from __future__ import annotations


def _contiguous_states(module, args):
    return (args[0].contiguous(), *args[1:])


def contiguous_encoder_states(whisper) -> bool:
    """Make the encoder's hidden states contiguous as they enter its first layer (a forward
    pre-hook on ``model.encoder.layers[0]``). Returns whether the hook was added (once per
    model)."""
    layers = whisper.model.encoder.layers
    if not len(layers) or getattr(layers[0], "_speechmerge_contiguous", False):
        return False
    layers[0].register_forward_pre_hook(_contiguous_states)
    layers[0]._speechmerge_contiguous = True
    return True
