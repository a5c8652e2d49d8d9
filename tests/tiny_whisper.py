"""A tiny random Whisper (d_model 16, one layer each side, vocabulary 100) for unit tests."""

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
