"""Acoustic domains: composable, seeded transforms of a float32 mono 16 kHz waveform.

A domain is a list of transform configs, each a dict with a ``type`` and its parameters::

    build_domain([{"type": "telephone"}, {"type": "noise", "snr_db": 10, "color": "pink"}])

``config.yaml`` (``acoustic_domains``) carries the same structure as ``DEFAULT_DOMAINS``, so users
add their own domains without code. A numeric parameter may also be a range ``[low, high]``:
it is then drawn uniformly per utterance. All randomness comes from the generator passed to the
domain (one per utterance, see ``speechmerge.data.voices.utterance_rng``): same generator state,
same output. The domain's output is float32 clipped to [-1, 1].

Length: every transform keeps the input length except ``speed`` (n -> ceil(n / factor)),
``tempo`` and ``child`` (n -> round(n / tempo)) and ``reverb`` (n -> n + len(RIR) - 1, the full
convolution, so the reverberant tail is kept).

Transform types: clean (identity), gain, clipping, lowpass, highpass, telephone, mulaw, noise,
babble, reverb, speed, tempo, pitch_shift (alias pitch), child.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import ClassVar, Sequence

import numpy as np
from scipy import fft as sp_fft
from scipy.signal import butter, fftconvolve, sosfilt

from speechmerge.data.audio import SAMPLE_RATE, resample


class DomainError(ValueError):
    """An unknown transform type, an unknown or out-of-range parameter, or unusable input."""


TRANSFORMS: dict[str, type["Transform"]] = {}


def register(cls):
    TRANSFORMS[cls.type] = cls
    return cls


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _scale_to_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Noise scaled so that 10·log10(Σ signal² / Σ noise²) = snr_db (power over the whole signal)."""
    p_sig = float(np.sum(np.square(signal, dtype=np.float64)))
    p_noise = float(np.sum(np.square(noise, dtype=np.float64)))
    if p_sig == 0.0 or p_noise == 0.0:
        return np.zeros_like(signal)
    return noise * math.sqrt(p_sig / (p_noise * 10.0 ** (snr_db / 10.0)))


def _rational(factor: float, max_den: int = 100) -> Fraction:
    return Fraction(factor).limit_denominator(max_den)


def _speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Resample by ``factor`` (≈ p/q): duration / factor, pitch and formants × factor."""
    ratio = _rational(factor)
    return resample(x, ratio.numerator, ratio.denominator)


def time_stretch(
    x: np.ndarray, rate: float, sr: int = SAMPLE_RATE, *, frame_ms: float = 20.0, tolerance_ms: float = 5.0
) -> np.ndarray:
    """WSOLA time-scale modification (Verhelst & Roelands 1993): tempo × ``rate``, pitch kept.

    Hann frames of N samples are overlap-added at synthesis hop N/2 (periodic Hann at 50 %
    overlap sums to one). Frame k is read near analysis position k·(N/2)·rate, shifted by
    δ ∈ [-tol, tol] to maximise the cross-correlation with the natural continuation of the
    previous frame. Output length = round(len(x) / rate).
    """
    n_out = int(round(len(x) / rate))
    N = max(16, int(sr * frame_ms / 1000) // 2 * 2)
    hop, tol = N // 2, int(sr * tolerance_ms / 1000)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N) / N)).astype(np.float32)
    pad = N + 2 * tol
    xp = np.concatenate(
        [np.zeros(pad, np.float32), np.asarray(x, np.float32), np.zeros(pad + N + int(hop * rate) + 1, np.float32)]
    )
    n_frames = n_out // hop + 2
    y = np.zeros(n_frames * hop + N, np.float32)
    prev = pad  # start of the previously chosen analysis frame in xp
    for k in range(n_frames):
        nominal = pad + int(round(k * hop * rate))
        if k == 0:
            pos = nominal
        else:
            template = xp[prev + hop : prev + hop + N]
            lo = max(0, nominal - tol)
            region = xp[lo : nominal + tol + N]
            corr = np.correlate(region, template, mode="valid")
            pos = lo + int(np.argmax(corr)) if corr.size and np.any(corr) else nominal
        y[k * hop : k * hop + N] += window * xp[pos : pos + N]
        prev = pos
    # frame 0 reads from `pad`, i.e. output sample 0 aligns with input sample 0
    return y[:n_out]


class Transform:
    """Base class: validated parameters (``defaults``), ranges drawn per utterance."""

    type: ClassVar[str] = ""
    defaults: ClassVar[dict] = {}
    #: parameter -> (min, max) allowed (inclusive); numeric parameters may be given as [low, high]
    bounds: ClassVar[dict] = {}
    #: parameter -> allowed values for string parameters
    choices: ClassVar[dict] = {}
    #: parameters that must be a single integer (never a range)
    integers: ClassVar[tuple] = ()
    needs_pool: ClassVar[bool] = False

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise DomainError(
                f"transform {self.type!r}: unknown parameter(s) {unknown}; allowed: {sorted(self.defaults)}"
            )
        self.params = {**self.defaults, **params}
        for name, value in self.params.items():
            if name in self.choices:
                if value not in self.choices[name]:
                    raise DomainError(f"transform {self.type!r}: {name}={value!r} not one of {self.choices[name]}")
                continue
            if name not in self.bounds:
                continue
            lo, hi = self.bounds[name]
            if name in self.integers and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise DomainError(f"transform {self.type!r}: {name}={value!r} must be an integer")
            values = value if isinstance(value, (list, tuple)) else [value]
            if isinstance(value, (list, tuple)) and (len(value) != 2 or value[0] > value[1]):
                raise DomainError(f"transform {self.type!r}: {name}={value!r} must be a number or [low, high]")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v <= hi) or math.isnan(v):
                    raise DomainError(f"transform {self.type!r}: {name}={value!r} outside [{lo}, {hi}]")

    def draw(self, name: str, rng: np.random.Generator) -> float:
        value = self.params[name]
        if isinstance(value, (list, tuple)):
            return float(rng.uniform(value[0], value[1]))
        return value

    def __call__(self, x: np.ndarray, rng: np.random.Generator, pool: Sequence[np.ndarray] | None = None) -> np.ndarray:
        raise NotImplementedError

    def config(self) -> dict:
        return {"type": self.type, **self.params}


@register
class Clean(Transform):
    """Identity."""

    type = "clean"

    def __call__(self, x, rng, pool=None):
        return x


@register
class Gain(Transform):
    """y = x · 10^(gain_db/20) (clipped to [-1, 1] at the end of the domain: overdrive)."""

    type = "gain"
    defaults = {"gain_db": 0.0}
    bounds = {"gain_db": (-60.0, 40.0)}

    def __call__(self, x, rng, pool=None):
        return x * np.float32(10.0 ** (self.draw("gain_db", rng) / 20.0))


@register
class Clipping(Transform):
    """Hard clipping at ``level`` × peak, then rescaled to the original peak: y = clip(x, ±c)·(peak/c)."""

    type = "clipping"
    defaults = {"level": 0.3}
    bounds = {"level": (0.01, 1.0)}

    def __call__(self, x, rng, pool=None):
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if peak == 0.0:
            return x
        c = peak * self.draw("level", rng)
        return np.clip(x, -c, c) * np.float32(peak / c)


class _Butter(Transform):
    btype: ClassVar[str] = ""

    def _filter(self, x, cutoff, order):
        sos = butter(int(order), cutoff, btype=self.btype, fs=SAMPLE_RATE, output="sos")
        return sosfilt(sos, x).astype(np.float32)


@register
class Lowpass(_Butter):
    """Causal Butterworth low-pass (order ``order``, -3 dB at ``cutoff_hz``)."""

    type, btype = "lowpass", "lowpass"
    defaults = {"cutoff_hz": 4000.0, "order": 6}
    bounds = {"cutoff_hz": (50.0, 7900.0), "order": (1, 12)}
    integers = ("order",)

    def __call__(self, x, rng, pool=None):
        return self._filter(x, self.draw("cutoff_hz", rng), self.params["order"])


@register
class Highpass(_Butter):
    """Causal Butterworth high-pass (order ``order``, -3 dB at ``cutoff_hz``)."""

    type, btype = "highpass", "highpass"
    defaults = {"cutoff_hz": 100.0, "order": 4}
    bounds = {"cutoff_hz": (10.0, 7900.0), "order": (1, 12)}
    integers = ("order",)

    def __call__(self, x, rng, pool=None):
        return self._filter(x, self.draw("cutoff_hz", rng), self.params["order"])


@register
class Telephone(Transform):
    """Narrow-band telephone channel: Butterworth band-pass ``low_hz``–``high_hz`` (order 6,
    causal), then resampled to ``narrow_sr`` (8 kHz) and back to 16 kHz (polyphase; nothing is
    left above narrow_sr / 2). Length kept."""

    type = "telephone"
    defaults = {"low_hz": 300.0, "high_hz": 3400.0, "order": 6, "narrow_sr": 8000}
    bounds = {"low_hz": (20.0, 3000.0), "high_hz": (1000.0, 7900.0), "order": (1, 10), "narrow_sr": (4000, 16000)}
    integers = ("order", "narrow_sr")

    def __call__(self, x, rng, pool=None):
        low, high = self.draw("low_hz", rng), self.draw("high_hz", rng)
        sr_n = int(self.params["narrow_sr"])
        high = min(high, 0.49 * sr_n)
        if low >= high:
            raise DomainError(f"transform 'telephone': low_hz {low} must be below high_hz {high}")
        sos = butter(int(self.params["order"]), [low, high], btype="bandpass", fs=SAMPLE_RATE, output="sos")
        y = sosfilt(sos, x).astype(np.float32)
        y = resample(resample(y, SAMPLE_RATE, sr_n), sr_n, SAMPLE_RATE)
        return _fit_length(y, len(x))


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    if len(y) >= n:
        return y[:n]
    return np.concatenate([y, np.zeros(n - len(y), y.dtype)])


@register
class MuLaw(Transform):
    """G.711-style μ-law codec (μ = 255): F(x) = sign(x)·ln(1+μ|x|)/ln(1+μ), quantised to
    2^bits uniform levels on [-1, 1] (mid-rise), then expanded with F⁻¹(y) = sign(y)((1+μ)^|y| − 1)/μ.
    The output takes at most 2^bits distinct values. Length kept."""

    type = "mulaw"
    defaults = {"mu": 255, "bits": 8}
    bounds = {"mu": (1, 65535), "bits": (2, 16)}
    integers = ("mu", "bits")

    def __call__(self, x, rng, pool=None):
        mu = float(self.params["mu"])
        levels = 2 ** int(self.params["bits"])
        x = np.clip(x.astype(np.float64), -1.0, 1.0)
        y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
        q = np.clip(np.floor((y + 1.0) / 2.0 * levels), 0, levels - 1)  # code 0..levels-1
        yq = (q + 0.5) / levels * 2.0 - 1.0  # code centre
        return (np.sign(yq) * np.expm1(np.abs(yq) * np.log1p(mu)) / mu).astype(np.float32)


_NOISE_SLOPES = {"white": 0.0, "pink": 1.0, "brown": 2.0, "blue": -1.0}


def coloured_noise(
    n: int, color: str, rng: np.random.Generator, sr: int = SAMPLE_RATE, f_min: float = 20.0
) -> np.ndarray:
    """Gaussian noise with power spectral density ∝ 1/f^α (white α=0, pink 1, brown 2, blue −1)
    for f ≥ ``f_min``, flat below it (no infrasound build-up) and zero at DC; shaped in the
    frequency domain of white Gaussian noise."""
    alpha = _NOISE_SLOPES[color]
    if alpha == 0.0:
        return rng.standard_normal(n).astype(np.float32)
    m = sp_fft.next_fast_len(n, real=True)  # shape a slightly longer block, keep the first n samples
    spec = sp_fft.rfft(rng.standard_normal(m))
    f = np.maximum(sp_fft.rfftfreq(m, 1.0 / sr), f_min)
    spec *= f ** (-alpha / 2.0)
    spec[0] = 0.0
    return sp_fft.irfft(spec, m)[:n].astype(np.float32)


@register
class Noise(Transform):
    """Additive stationary noise at ``snr_db`` dB: SNR = 10·log10(Σx²/Σn²) over the whole
    utterance (silences included). ``color``: white, pink, brown or blue. Length kept."""

    type = "noise"
    defaults = {"snr_db": 10.0, "color": "white"}
    bounds = {"snr_db": (-20.0, 80.0)}
    choices = {"color": tuple(_NOISE_SLOPES)}

    def __call__(self, x, rng, pool=None):
        snr = self.draw("snr_db", rng)
        noise = coloured_noise(len(x), self.params["color"], rng)
        return (x + _scale_to_snr(x, noise, snr)).astype(np.float32)


@register
class Babble(Transform):
    """Babble: ``talkers`` other utterances, each at equal RMS, circularly shifted by a random
    offset and looped to the utterance's length, summed and added at ``snr_db`` (as ``noise``).

    The talkers come from the domain's pool of waveforms (``Domain.pool``; the dataset builder
    fills it with other utterances of the same language). Without a pool the talkers are
    time-reversed, shifted copies of the utterance itself (unintelligible, speech-shaped).
    Length kept."""

    type = "babble"
    defaults = {"snr_db": 10.0, "talkers": 4}
    bounds = {"snr_db": (-20.0, 80.0), "talkers": (1, 64)}
    integers = ("talkers",)
    needs_pool = True

    def __call__(self, x, rng, pool=None):
        snr = self.draw("snr_db", rng)
        n = len(x)
        sources = [p for p in (pool or []) if len(p) > 0 and _rms(p) > 0]
        if not sources:
            sources = [x[::-1]]
        mix = np.zeros(n, np.float64)
        for _ in range(int(self.params["talkers"])):
            talker = np.asarray(sources[int(rng.integers(len(sources)))], np.float64)
            reps = -(-n // len(talker)) + 1
            looped = np.tile(talker, reps)
            start = int(rng.integers(len(talker)))
            seg = looped[start : start + n]
            r = _rms(seg)
            if r > 0:
                mix += seg / r
        return (x + _scale_to_snr(x, mix, snr)).astype(np.float32)


def synthetic_rir(
    rt60: float, drr_db: float, rng: np.random.Generator, sr: int = SAMPLE_RATE, predelay_ms: float = 0.0
) -> np.ndarray:
    """Room impulse response after Polack's statistical model: a unit direct path, then Gaussian
    noise under the envelope exp(−3·ln(10)·t / RT60) (energy −60 dB at t = RT60), scaled so that
    direct / reverberant energy = ``drr_db``. Length = pre-delay + round(RT60·sr) + 1 samples."""
    n_tail = max(1, int(round(rt60 * sr)))
    delay = int(round(predelay_ms * sr / 1000.0))
    t = np.arange(1, n_tail + 1) / sr
    tail = rng.standard_normal(n_tail) * np.exp(-3.0 * math.log(10.0) * t / rt60)
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / float(np.sum(tail**2)))
    h = np.zeros(1 + delay + n_tail)
    h[0] = 1.0
    h[1 + delay :] = tail
    return h


@register
class Reverb(Transform):
    """Convolution with ``synthetic_rir(rt60, drr_db)``; the output (full convolution,
    n + len(RIR) − 1 samples) is rescaled to the input's RMS over the input's length, so the
    level stays comparable and the tail decays after the speech ends."""

    type = "reverb"
    defaults = {"rt60": 0.5, "drr_db": 0.0, "predelay_ms": 0.0}
    bounds = {"rt60": (0.05, 3.0), "drr_db": (-30.0, 40.0), "predelay_ms": (0.0, 200.0)}

    def __call__(self, x, rng, pool=None):
        h = synthetic_rir(
            self.draw("rt60", rng), self.draw("drr_db", rng), rng, predelay_ms=self.draw("predelay_ms", rng)
        )
        y = fftconvolve(x.astype(np.float64), h)
        r_in, r_out = _rms(x), _rms(y[: len(x)])
        if r_out > 0:
            y *= r_in / r_out
        return y.astype(np.float32)


@register
class Speed(Transform):
    """Speed perturbation (as sox ``speed``): resampling by ``factor`` ≈ p/q (denominator ≤ 100);
    tempo, pitch and formants all scale by the factor; length n → ceil(n·q/p)."""

    type = "speed"
    defaults = {"factor": 1.0}
    bounds = {"factor": (0.25, 4.0)}

    def __call__(self, x, rng, pool=None):
        return _speed(x, self.draw("factor", rng))


@register
class Tempo(Transform):
    """Tempo change without pitch change (WSOLA, ``time_stretch``); length n → round(n / factor)."""

    type = "tempo"
    defaults = {"factor": 1.0}
    bounds = {"factor": (0.25, 4.0)}

    def __call__(self, x, rng, pool=None):
        return time_stretch(x, self.draw("factor", rng))


@register
class PitchShift(Transform):
    """Pitch and formants × 2^(semitones/12) at constant duration: speed change by that factor,
    then WSOLA back to the original length (like a shorter/longer vocal tract)."""

    type = "pitch_shift"
    defaults = {"semitones": 0.0}
    bounds = {"semitones": (-24.0, 24.0)}

    def __call__(self, x, rng, pool=None):
        f = 2.0 ** (self.draw("semitones", rng) / 12.0)
        if f == 1.0:
            return x
        y = _speed(x, f)
        return _fit_length(time_stretch(y, len(y) / len(x)), len(x))


@register
class Child(Transform):
    """Child-like speech: pitch and formants raised by ``semitones`` (shorter vocal tract, higher
    F0) and tempo × ``tempo`` (faster). Length n → round(n / tempo)."""

    type = "child"
    defaults = {"semitones": 4.0, "tempo": 1.1}
    bounds = {"semitones": (-12.0, 24.0), "tempo": (0.25, 4.0)}

    def __call__(self, x, rng, pool=None):
        f = 2.0 ** (self.draw("semitones", rng) / 12.0)
        tempo = self.draw("tempo", rng)
        n_out = int(round(len(x) / tempo))
        y = _speed(x, f) if f != 1.0 else x
        return _fit_length(time_stretch(y, len(y) / n_out), n_out)


class Domain:
    """An ordered chain of transforms; ``domain(wave, rng)`` applies them and clips to [-1, 1]."""

    def __init__(self, transforms: Sequence[Transform], name: str = "", pool: Sequence[np.ndarray] | None = None):
        self.transforms = list(transforms)
        self.name = name
        self.pool = pool

    @property
    def needs_pool(self) -> bool:
        return any(t.needs_pool for t in self.transforms)

    def config(self) -> list[dict]:
        return [t.config() for t in self.transforms]

    def __call__(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(wave, dtype=np.float32)
        if x.ndim != 1 or x.size == 0:
            raise DomainError(f"domain {self.name!r}: expected a non-empty mono waveform, got shape {x.shape}")
        for t in self.transforms:
            x = np.asarray(t(x, rng, self.pool), dtype=np.float32)
            if x.size == 0:
                raise DomainError(f"domain {self.name!r}: transform {t.type!r} produced an empty waveform")
        return np.clip(x, -1.0, 1.0).astype(np.float32)


#: alternative type names accepted in configs
ALIASES = {"identity": "clean", "pitch": "pitch_shift", "telephony": "telephone", "mu_law": "mulaw", "rir": "reverb"}


def build_transform(cfg: dict, *, where: str = "transform") -> Transform:
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise DomainError(f"{where}: a transform must be a mapping with a 'type' key, got {cfg!r}")
    params = {k: v for k, v in cfg.items() if k != "type"}
    kind = ALIASES.get(cfg["type"], cfg["type"])
    if kind not in TRANSFORMS:
        raise DomainError(f"{where}: unknown acoustic transform type {kind!r}; known: {sorted(TRANSFORMS)}")
    try:
        return TRANSFORMS[kind](**params)
    except DomainError as err:
        raise DomainError(f"{where}: {err}") from None


def build_domain(configs: Sequence[dict] | None, *, name: str = "", pool: Sequence[np.ndarray] | None = None) -> Domain:
    """A ``Domain`` from a list of transform configs (``None`` or ``[]`` = clean)."""
    if configs is None:
        configs = []
    if isinstance(configs, dict) or not isinstance(configs, (list, tuple)):
        raise DomainError(f"domain {name!r}: expected a list of transforms, got {type(configs).__name__}")
    label = f"domain {name!r}" if name else "domain"
    return Domain(
        [build_transform(c, where=f"{label} transform #{i + 1}") for i, c in enumerate(configs)], name=name, pool=pool
    )


#: Named domains (the default ``acoustic_domains`` of config.yaml): lists of transform configs.
DEFAULT_DOMAINS: dict[str, list[dict]] = {
    "clean": [],
    "telephone": [{"type": "telephone"}],
    "noisy": [{"type": "noise", "snr_db": [5.0, 15.0], "color": "white"}],
    "babble": [{"type": "babble", "snr_db": [5.0, 15.0], "talkers": 4}],
    "reverb": [{"type": "reverb", "rt60": [0.4, 0.9], "drr_db": 0.0}],
    "fast": [{"type": "speed", "factor": 1.25}],
    "slow": [{"type": "speed", "factor": 0.8}],
    "child": [{"type": "child", "semitones": 4.0, "tempo": 1.1}],
    "mulaw": [{"type": "mulaw", "mu": 255, "bits": 8}],
    "farfield": [
        {"type": "lowpass", "cutoff_hz": 5000.0, "order": 4},
        {"type": "reverb", "rt60": [0.6, 1.0], "drr_db": -5.0, "predelay_ms": 5.0},
        {"type": "noise", "snr_db": 20.0, "color": "pink"},
    ],
    "car": [{"type": "highpass", "cutoff_hz": 80.0}, {"type": "noise", "snr_db": [0.0, 10.0], "color": "brown"}],
    "muffled": [{"type": "lowpass", "cutoff_hz": 1500.0, "order": 6}],
    "distorted": [{"type": "clipping", "level": 0.2}],
}


def transform_types() -> list[str]:
    return sorted(TRANSFORMS)


__all__ = [
    "DomainError",
    "Domain",
    "Transform",
    "TRANSFORMS",
    "DEFAULT_DOMAINS",
    "build_domain",
    "build_transform",
    "coloured_noise",
    "synthetic_rir",
    "time_stretch",
    "transform_types",
]
