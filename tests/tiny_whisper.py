"""A tiny random Whisper (d_model 16, one layer each side, vocabulary 100) and a batch for it, for unit tests."""

import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration


def tiny_whisper(seed=0):
    cfg = WhisperConfig(
        vocab_size=100,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=8,
        max_source_positions=10,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    torch.manual_seed(seed)
    return WhisperForConditionalGeneration(cfg).eval()


def tiny_batch(seed=0):
    """Three decoder sequences for :func:`tiny_whisper` with repeated tokens, padding and targets."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, 40, (3, 9), generator=g)  # few distinct tokens: many repeats
    ids[:, 0] = 1
    ids[2, 6:] = 0  # padding (pad_token_id) at the end of one row
    labels = torch.cat([ids[:, 1:], torch.full((3, 1), 2)], dim=1)  # then end of text
    labels[:, :2] = -100
    labels[2, 6:] = -100
    return {"input_features": torch.randn(3, 8, 20, generator=g), "decoder_input_ids": ids, "labels": labels}
