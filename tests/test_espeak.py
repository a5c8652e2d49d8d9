"""eSpeak NG through ctypes: output format, exact resampling, duration, determinism, errors."""

import math
import threading

import numpy as np
import pytest

from speechmerge.data import espeak

TEXT = "The quick brown fox jumps over the lazy dog near the river bank."  # 13 words


def test_languages_and_variants_available():
    assert espeak.available_languages() == sorted(espeak.LANGUAGE_VOICES)
    variants = set(espeak.voice_variants())
    assert {f"m{i}" for i in range(1, 8)} | {f"f{i}" for i in range(1, 6)} | {"klatt", "klatt3"} <= variants
    assert espeak.LANGUAGE_VOICES["pt"] == "pt" and espeak.LANGUAGE_VOICES["zh"] == "cmn"


def test_synthesis_format_and_exact_resampling():
    raw = espeak.synthesize(TEXT, "en", sample_rate=22_050)
    wave = espeak.synthesize(TEXT, "en")
    assert wave.dtype == np.float32 and wave.ndim == 1
    # polyphase 22 050 -> 16 000 is up 320 / down 441: ceil(n * 320 / 441) samples
    assert len(wave) == math.ceil(len(raw) * 320 / 441)
    assert np.abs(wave).max() <= 1.0 and np.sqrt(np.mean(wave**2)) > 0.02
    # raw samples are int16 / 32768
    assert np.allclose(raw * 32768, np.round(raw * 32768))


def test_duration_is_plausible_and_follows_rate():
    slow = espeak.synthesize(TEXT, "en", rate=120)
    normal = espeak.synthesize(TEXT, "en", rate=175)
    fast = espeak.synthesize(TEXT, "en", rate=350)
    seconds = len(normal) / 16_000
    nominal = 13 * 60 / 175  # 13 words at 175 words/min = 4.46 s
    assert 0.5 * nominal < seconds < 1.6 * nominal
    assert len(slow) > len(normal) > len(fast)


def test_long_text_is_not_truncated():
    long_text = " ".join([TEXT] * 6)  # 78 words
    assert len(espeak.synthesize(long_text, "en")) > 4.5 * len(espeak.synthesize(TEXT, "en"))


@pytest.mark.parametrize(
    "language,text",
    [
        ("ca", "Bon dia a tothom."),
        ("de", "Guten Morgen, mein Freund."),
        ("es", "Buenos días a todos."),
        ("fr", "Bonjour tout le monde."),
        ("it", "Buongiorno a tutti."),
        ("id", "Selamat pagi semuanya."),
        ("nl", "Goedemorgen allemaal."),
        ("pt", "Bom dia a todos."),
        ("ru", "Доброе утро всем."),
        ("sv", "God morgon allihopa."),
        ("zh", "大家早上好。"),
        ("en", "Good morning everyone."),
    ],
)
def test_every_project_language_speaks(language, text):
    wave = espeak.synthesize(text, language)
    assert 0.4 < len(wave) / 16_000 < 5.0
    assert np.sqrt(np.mean(wave**2)) > 0.01


def test_deterministic_and_independent_of_call_order():
    a = espeak.synthesize(TEXT, "en", voice_variant="m3", rate=190, pitch=60, pitch_range=40)
    espeak.synthesize("Der Hund schläft.", "de", voice_variant="klatt")  # some other state in between
    espeak.synthesize(TEXT, "en", voice_variant="f2")
    b = espeak.synthesize(TEXT, "en", voice_variant="m3", rate=190, pitch=60, pitch_range=40)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != espeak.synthesize(TEXT, "en", voice_variant="m3", rate=190, pitch=61).tobytes()


def test_library_is_unloaded_between_utterances():
    """Order independence rests on dlclose really unloading libespeak-ng after each utterance."""
    espeak.synthesize("Hello.", "en")
    maps = open("/proc/self/maps").read()
    assert str(espeak.library_path().resolve().name) not in maps


def test_thread_safe():
    jobs = [("en", "m1"), ("de", "f1"), ("fr", "klatt"), ("en", "m1")]
    want = [espeak.synthesize("One two three four.", lang, voice_variant=v).tobytes() for lang, v in jobs]
    got = [None] * len(jobs)

    def work(i, lang, v):
        got[i] = espeak.synthesize("One two three four.", lang, voice_variant=v).tobytes()

    threads = [threading.Thread(target=work, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want


def test_errors_name_the_problem():
    with pytest.raises(espeak.SynthesisError, match="'xx'"):
        espeak.synthesize("hello", "xx")
    with pytest.raises(espeak.SynthesisError, match="empty text"):
        espeak.synthesize("   ", "en")
    with pytest.raises(espeak.SynthesisError, match="'nope'"):
        espeak.synthesize("hello", "en", voice_variant="nope")
    with pytest.raises(espeak.SynthesisError, match="rate"):
        espeak.synthesize("hello", "en", rate=1000)
    with pytest.raises(espeak.SynthesisError, match="pitch"):
        espeak.synthesize("hello", "en", pitch=101)
