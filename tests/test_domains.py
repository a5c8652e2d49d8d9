"""Acoustic domain transforms: each one's defining property, determinism, config errors."""

import math

import numpy as np
import pytest

from speechmerge.data.domains import (
    DEFAULT_DOMAINS,
    DomainError,
    build_domain,
    coloured_noise,
    synthetic_rir,
    time_stretch,
)

SR = 16_000


def rng(seed=0):
    return np.random.default_rng(seed)


def tone(freq=200.0, seconds=1.0, amp=0.3):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speechlike(seconds=1.0, seed=1):
    """Harmonic signal (f0 150 Hz, 30 harmonics) with a syllable-rate envelope and silences."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * 150 * h * t) / h for h in range(1, 31))
    env = np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    return (0.2 * x * env / np.abs(x).max()).astype(np.float32)


def peak_freq(x):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / SR)[np.argmax(spec)]


def band_db(x, lo, hi=SR / 2):
    s = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return 10 * np.log10(s[(f > lo) & (f <= hi)].sum() / s.sum())


def snr_db(clean, noisy):
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum(noise**2))


def apply(cfg, x, seed=0, pool=None):
    return build_domain(cfg, pool=pool)(x, rng(seed))


def test_clean_is_identity():
    x = speechlike()
    assert np.array_equal(apply([], x), x)
    assert np.array_equal(apply([{"type": "clean"}], x), x)


def test_telephone_has_no_energy_above_4khz():
    x = (rng(3).standard_normal(SR) * 0.1).astype(np.float32)  # white: energy everywhere
    y = apply([{"type": "telephone"}], x)
    assert len(y) == len(x)
    assert band_db(y, 4500) < -50  # nothing survives the 8 kHz round trip
    assert band_db(y, 0, 150) < -25  # and the 300 Hz high-pass side
    assert band_db(y, 400, 3000) > -1.5  # the pass band carries the energy


def test_lowpass_and_highpass():
    x = (rng(4).standard_normal(SR) * 0.1).astype(np.float32)
    assert band_db(apply([{"type": "lowpass", "cutoff_hz": 1000}], x), 2000) < -30
    assert band_db(apply([{"type": "highpass", "cutoff_hz": 1000, "order": 6}], x), 0, 500) < -30


@pytest.mark.parametrize("color", ["white", "pink", "brown", "blue"])
@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_noise_measured_snr_equals_requested(color, snr):
    x = speechlike()
    y = apply([{"type": "noise", "snr_db": snr, "color": color}], x * 0.2)
    assert len(y) == len(x)
    assert snr_db(x * 0.2, y) == pytest.approx(snr, abs=0.01)


def test_noise_colours_have_their_slopes():
    r = rng(5)
    low = lambda c: band_db(coloured_noise(SR, c, r), 0, 1000)  # noqa: E731
    assert low("brown") > low("pink") > low("white") > low("blue")
    assert low("white") == pytest.approx(10 * np.log10(1000 / 8000), abs=0.3)  # flat: 1/8 of the band


def test_snr_range_is_drawn_per_utterance():
    x = speechlike()
    cfg = [{"type": "noise", "snr_db": [5.0, 15.0]}]
    snrs = [snr_db(x, apply(cfg, x, seed=s)) for s in range(6)]
    assert all(5.0 - 1e-3 <= s <= 15.0 + 1e-3 for s in snrs)
    assert np.ptp(snrs) > 1.0


def test_babble_uses_pool_at_requested_snr():
    x = speechlike(seed=1)
    pool = [tone(300, 0.4), tone(500, 0.7), speechlike(0.5, seed=2)]
    y = apply([{"type": "babble", "snr_db": 5.0, "talkers": 3}], x, pool=pool)
    assert len(y) == len(x)
    assert snr_db(x, y) == pytest.approx(5.0, abs=0.01)
    # the pool's tones are in the mixture
    residual = y - x
    assert band_db(residual, 280, 320) > -15 or band_db(residual, 480, 520) > -15
    # without a pool: time-reversed copies of the utterance itself
    assert snr_db(x, apply([{"type": "babble", "snr_db": 8.0}], x)) == pytest.approx(8.0, abs=0.01)


def test_reverb_rir_decays_at_rt60_and_adds_a_tail():
    h = synthetic_rir(0.6, 0.0, rng(0))
    assert len(h) == 1 + round(0.6 * SR) and h[0] == 1.0
    tail = h[1:]
    assert np.sum(tail**2) == pytest.approx(1.0)  # DRR 0 dB: direct energy = reverberant
    edc = np.cumsum(tail[::-1] ** 2)[::-1]  # Schroeder backward integration
    edc_db = 10 * np.log10(edc / edc[0])
    t30 = np.argmax(edc_db < -30) / SR
    assert 2 * t30 == pytest.approx(0.6, rel=0.05)  # RT60 extrapolated from T30

    x = speechlike(0.5)
    y = apply([{"type": "reverb", "rt60": 0.4}], x)
    assert len(y) == len(x) + round(0.4 * SR)
    assert np.sqrt(np.mean(y[: len(x)] ** 2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-3)
    assert np.sum(y[len(x) :] ** 2) > 1e-3  # energy after the end of the input
    longer = apply([{"type": "reverb", "rt60": 1.2}], x)
    late = lambda z: np.sum(z[len(x) + 3200 : len(x) + 6400] ** 2)  # noqa: E731  200-400 ms after the end
    assert late(longer) > 3 * late(y)


@pytest.mark.parametrize("factor", [1.25, 0.8, 1.1])
def test_speed_scales_length_and_pitch(factor):
    x = tone(200.0)
    y = apply([{"type": "speed", "factor": factor}], x)
    assert len(y) == math.ceil(len(x) / factor)
    assert peak_freq(y) == pytest.approx(200 * factor, abs=3)


def test_tempo_keeps_pitch():
    x = tone(200.0)
    y = apply([{"type": "tempo", "factor": 1.5}], x)
    assert len(y) == round(len(x) / 1.5)
    assert peak_freq(y) == pytest.approx(200, abs=3)
    assert len(time_stretch(x, 0.5)) == 2 * len(x)


def test_pitch_shift_keeps_length():
    x = tone(200.0)
    y = apply([{"type": "pitch_shift", "semitones": 4}], x)
    assert len(y) == len(x)
    assert peak_freq(y) == pytest.approx(200 * 2 ** (4 / 12), abs=4)


def test_child_raises_pitch_and_speeds_up():
    x = tone(200.0)
    y = apply([{"type": "child", "semitones": 5, "tempo": 1.2}], x)
    assert len(y) == round(len(x) / 1.2)
    assert peak_freq(y) == pytest.approx(200 * 2 ** (5 / 12), abs=4)


def test_mulaw_quantises_to_256_levels():
    x = np.linspace(-1, 1, 20_000, dtype=np.float32)
    y = apply([{"type": "mulaw"}], x)
    assert len(np.unique(y)) == 256
    # hand computed: x = 1 -> code 255 -> centre y = 255.5/128 - 1 -> ((256)^y - 1) / 255
    assert y[-1] == pytest.approx((256 ** (255.5 / 128 - 1) - 1) / 255, abs=1e-6)  # 0.97849
    assert y[-1] == pytest.approx(0.97849, abs=1e-4)
    assert np.all(np.sign(y) == np.sign(x)) and np.allclose(y, -y[::-1])
    s = speechlike()
    assert snr_db(s, apply([{"type": "mulaw"}], s)) > 30
    assert len(np.unique(apply([{"type": "mulaw", "bits": 4}], s))) <= 16


def test_gain_and_clipping():
    x = speechlike()
    assert np.allclose(apply([{"type": "gain", "gain_db": -6.0}], x), x * 10 ** (-6 / 20))
    y = apply([{"type": "clipping", "level": 0.5}], x)
    assert np.abs(y).max() == pytest.approx(np.abs(x).max(), rel=1e-6)
    assert np.mean(np.abs(y) >= 0.999 * np.abs(x).max()) > 0.05  # flat tops
    assert np.abs(apply([{"type": "gain", "gain_db": 20.0}], x)).max() == 1.0  # domain output clipped


def test_default_domains_run_deterministic_and_bounded():
    assert len(DEFAULT_DOMAINS) >= 10
    assert {"clean", "telephone", "noisy", "babble", "reverb", "fast", "slow", "child", "mulaw", "farfield"} <= set(
        DEFAULT_DOMAINS
    )
    x = speechlike(0.5)
    for name, cfg in DEFAULT_DOMAINS.items():
        dom = build_domain(cfg, name=name, pool=[speechlike(0.3, seed=9)])
        a, b = dom(x, rng(7)), dom(x, rng(7))
        assert a.dtype == np.float32 and a.ndim == 1 and len(a) > 0, name
        assert np.abs(a).max() <= 1.0, name
        assert a.tobytes() == b.tobytes(), name
    noisy = build_domain(DEFAULT_DOMAINS["noisy"])
    assert noisy(x, rng(1)).tobytes() != noisy(x, rng(2)).tobytes()


@pytest.mark.parametrize(
    "cfg,match",
    [
        ([{"type": "hiss"}], "unknown acoustic transform type 'hiss'"),
        ([{"snr_db": 3}], "'type'"),
        ([{"type": "noise", "snr": 3}], "unknown parameter.*'snr'"),
        ([{"type": "noise", "snr_db": 300}], "snr_db=300"),
        ([{"type": "noise", "snr_db": [15, 5]}], r"snr_db=\[15, 5\]"),
        ([{"type": "noise", "color": "purple"}], "color='purple'"),
        ([{"type": "babble", "talkers": 2.5}], "talkers=2.5 must be an integer"),
        ([{"type": "speed", "factor": 0}], "factor=0"),
        ({"type": "noise"}, "list of transforms"),
    ],
)
def test_bad_configs_name_the_fault(cfg, match):
    with pytest.raises(DomainError, match=match):
        build_domain(cfg, name="mine")


def test_aliases_and_the_shipped_config_domains_build():
    assert build_domain([{"type": "pitch", "semitones": 3}]).config() == [{"type": "pitch_shift", "semitones": 3}]
    from pathlib import Path

    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    for name, transforms in cfg.get("acoustic_domains", {}).items():
        build_domain(transforms, name=name)(speechlike(0.3), rng())


def test_error_names_the_domain_and_position():
    with pytest.raises(DomainError, match=r"domain 'mine' transform #2"):
        build_domain([{"type": "clean"}, {"type": "nope"}], name="mine")


def test_empty_input_is_an_error():
    with pytest.raises(DomainError, match="non-empty"):
        build_domain([], name="x")(np.zeros(0, np.float32), rng())
