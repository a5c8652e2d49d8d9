"""Audio encoding: FLAC bytes in, float32 mono 16 kHz out (soundfile, no torchcodec)."""

from __future__ import annotations

import io
from fractions import Fraction
from functools import lru_cache

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """Audio that cannot be decoded, is empty, or is otherwise unusable."""


@lru_cache(maxsize=64)
def _polyphase_filter(up: int, down: int) -> np.ndarray:
    """scipy's default ``resample_poly`` low-pass (Kaiser β=5, cutoff 1/max(up, down) of Nyquist,
    2·10·max(up, down)+1 taps), designed once per ratio; read-only, scipy copies it."""
    max_rate = max(up, down)
    from scipy.signal import firwin  # scipy.signal takes ~2 s to import: only jobs that resample pay it

    h = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    h.setflags(write=False)
    return h


def resample(wave: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Exact rational resampling (polyphase), e.g. 22 050 -> 16 000 is up 320 / down 441.

    Output length is ceil(n · up / down); the filter is scipy's default, cached per ratio.
    """
    if orig_sr == target_sr:
        return np.asarray(wave, dtype=np.float32)
    ratio = Fraction(int(target_sr), int(orig_sr))
    up, down = ratio.numerator, ratio.denominator
    from scipy.signal import resample_poly

    out = resample_poly(np.asarray(wave, dtype=np.float64), up, down, window=_polyphase_filter(up, down))
    return out.astype(np.float32)


def encode_flac(wave: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """float waveform in [-1, 1] -> 16-bit FLAC bytes (deterministic)."""
    wave = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_audio(cell, *, target_sr: int = SAMPLE_RATE, what: str = "audio") -> np.ndarray:
    """Decode one audio cell to float32 mono at ``target_sr``.

    ``cell`` is raw bytes, a path, or a ``{"bytes": ..., "path": ...}`` mapping as stored by
    ``datasets.Audio(decode=False)``. ``what`` names the row or file in error messages.
    """
    if isinstance(cell, dict):
        data, path = cell.get("bytes"), cell.get("path")
        source = io.BytesIO(data) if data else path
    elif isinstance(cell, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(cell))
    else:
        source = str(cell)
    if source is None:
        raise AudioError(f"{what}: no audio bytes and no path")
    try:
        wave, sr = sf.read(source, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types
        raise AudioError(f"{what}: cannot decode audio ({exc})") from exc
    return resample(to_mono(wave, what), sr, target_sr)


#: Peak level under which a mono signal counts as silent: -60 dBFS, 33 steps of 16-bit audio.
SILENCE_PEAK = 1e-3


def to_mono(wave: np.ndarray, what: str) -> np.ndarray:
    """(samples, channels) or (samples,) float audio -> mono by averaging the channels; audio that
    is empty, holds NaN / Inf, or is silent after the mix (peak under ``SILENCE_PEAK``, e.g.
    channels in opposite phase that cancel) is an ``AudioError`` naming ``what``."""
    wave = np.asarray(wave, dtype=np.float32)
    channels = wave if wave.ndim == 2 else wave[:, None]
    if channels.size == 0:
        raise AudioError(f"{what}: audio is empty")
    if not np.all(np.isfinite(channels)):
        bad = int(np.flatnonzero(~np.isfinite(channels).all(axis=1))[0])
        raise AudioError(f"{what}: audio contains NaN or infinite samples (first at sample {bad})")
    mono = channels.mean(axis=1) if channels.shape[1] > 1 else channels[:, 0]
    peak = float(np.max(np.abs(mono)))
    if peak < SILENCE_PEAK:
        peaks = np.max(np.abs(channels), axis=0)
        if channels.shape[1] > 1 and float(peaks.max()) >= SILENCE_PEAK:
            why = (
                f"its {channels.shape[1]} channels cancel when averaged to mono (channel peaks "
                f"{', '.join(f'{p:.3g}' for p in peaks)}; mix peak {peak:.2g}): one channel is phase-inverted"
            )
        else:
            why = f"peak level {peak:.2g} (under {SILENCE_PEAK:g}, -60 dBFS)"
        raise AudioError(f"{what}: audio is silent after conversion to mono: {why}")
    return mono
