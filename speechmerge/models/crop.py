"""Encoder-context cropping: run Whisper on windows shorter than 30 s.

Whisper's log-mel front end gives ``sampling_rate / hop_length = 16000 / 160 = 100`` frames per
second and the second convolution has stride 2, so the encoder sees 50 positions per second
(1500 for 30 s). Cropping to ``S`` seconds keeps the first ``50 S`` rows of the (sinusoidal)
``encoder.embed_positions.weight``, sets ``config.max_source_positions = 50 S``, and makes the
feature extractor pad/trim audio to ``S`` s (``chunk_length = S``, ``n_samples = 16000 S``,
``nb_max_frames = 100 S``), which is exactly the input length the encoder then requires
(``max_source_positions * conv1.stride * conv2.stride``). Same trick as whisper.cpp's
``audio_ctx``; the first ``50 S`` sinusoids are what the full model uses for the first ``S``
seconds, so nothing else changes.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import WhisperFeatureExtractor

SAMPLE_RATE = 16_000
HOP_LENGTH = 160
N_FFT = 400
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames per second
POSITIONS_PER_SECOND = FRAMES_PER_SECOND // 2  # 50 encoder positions per second (conv2 stride 2)
FULL_SECONDS = 30
ENCODER_POSITIONS_KEY = "model.encoder.embed_positions.weight"


def check_max_seconds(max_seconds: Any, max_source_positions: int | None = None) -> int:
    """``max_seconds`` as an int in ``1 .. max_source_positions / 50``, or an error naming it.

    With ``max_source_positions=None`` only the type is checked (before a model is built).
    """
    limit = FULL_SECONDS if max_source_positions is None else max_source_positions // POSITIONS_PER_SECOND
    if (
        isinstance(max_seconds, bool)
        or not isinstance(max_seconds, (int, float))
        or float(max_seconds) != int(max_seconds)
        or not 1 <= int(max_seconds) <= limit
    ):
        where = (
            ""
            if max_source_positions is None
            else f" (the model has {max_source_positions} encoder positions = {limit} s)"
        )
        raise ValueError(f"max_seconds={max_seconds!r}: must be a whole number of seconds in 1..{limit}{where}")
    return int(max_seconds)


def crop_state_dict(config, state_dict: dict[str, torch.Tensor], max_seconds: int) -> int:
    """Crop ``state_dict``'s encoder positions and ``config.max_source_positions`` in place."""
    seconds = check_max_seconds(max_seconds, config.max_source_positions)
    n_pos = seconds * POSITIONS_PER_SECOND
    pos = state_dict[ENCODER_POSITIONS_KEY]
    if pos.shape[0] < n_pos:
        raise ValueError(f"{ENCODER_POSITIONS_KEY} has {pos.shape[0]} rows, cannot crop to {n_pos}")
    state_dict[ENCODER_POSITIONS_KEY] = pos[:n_pos].clone()
    config.max_source_positions = n_pos
    return n_pos


def feature_extractor(num_mel_bins: int = 80, chunk_length: int = FULL_SECONDS) -> WhisperFeatureExtractor:
    """Whisper's log-mel extractor for ``chunk_length``-second windows (16 kHz, hop 160, n_fft 400)."""
    fe = WhisperFeatureExtractor(
        feature_size=num_mel_bins,
        sampling_rate=SAMPLE_RATE,
        hop_length=HOP_LENGTH,
        chunk_length=int(chunk_length),
        n_fft=N_FFT,
    )
    assert fe.n_samples == int(chunk_length) * SAMPLE_RATE and fe.nb_max_frames == int(chunk_length) * FRAMES_PER_SECOND
    return fe


def chunk_seconds(config) -> int:
    """Window length (s) implied by a config's ``max_source_positions``."""
    return config.max_source_positions // POSITIONS_PER_SECOND


def crop_model(model, processor, max_seconds: int) -> int:
    """In-memory version of the import-time crop for a loaded model and its processor.

    Replaces ``model.model.encoder.embed_positions`` by its first ``50 S`` rows (frozen, as in
    transformers), updates ``max_source_positions`` and gives the processor an ``S``-second
    feature extractor. Returns the number of encoder positions kept.
    """
    encoder = model.model.encoder
    seconds = check_max_seconds(max_seconds, encoder.embed_positions.num_embeddings)
    n_pos = seconds * POSITIONS_PER_SECOND
    old = encoder.embed_positions
    new = torch.nn.Embedding(n_pos, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[:n_pos])
    new.weight.requires_grad_(old.weight.requires_grad)
    encoder.embed_positions = new
    for obj in {id(c): c for c in (model.config, encoder.config, model.model.decoder.config)}.values():
        obj.max_source_positions = n_pos
    encoder.max_source_positions = n_pos
    model.model.decoder.max_source_positions = n_pos
    processor.feature_extractor = feature_extractor(model.config.num_mel_bins, seconds)
    return n_pos
