"""Speech synthesis with eSpeak NG, driven through ctypes from the ``espeakng-loader`` wheel.

The wheel ships ``libespeak-ng.so`` and ``espeak-ng-data`` inside site-packages, so no system
package is needed. The C API used (``speak_lib.h``, API revision 12)::

    int  espeak_Initialize(espeak_AUDIO_OUTPUT output, int buflength, const char *path, int options);
    void espeak_SetSynthCallback(int (*cb)(short *wav, int numsamples, espeak_EVENT *events));
    espeak_ERROR espeak_SetVoiceByName(const char *name);          // "de", "de+m3", ...
    espeak_ERROR espeak_SetParameter(espeak_PARAMETER p, int value, int relative);
    espeak_ERROR espeak_Synth(const void *text, size_t size, unsigned int position,
                              espeak_POSITION_TYPE position_type, unsigned int end_position,
                              unsigned int flags, unsigned int *unique_identifier, void *user_data);

Every argument and return type is declared: without ``size_t`` for ``size`` (and pointer types
for the pointers) ctypes passes wrong-width integers and synthesis silently truncates.
We use ``AUDIO_OUTPUT_SYNCHRONOUS``: ``espeak_Synth`` returns only after the callback received
all samples (22 050 Hz, int16, mono), which we then resample exactly to 16 kHz
(polyphase, up 320 / down 441, ``speechmerge.data.audio.resample``).

The library is global state: every call holds a process-wide lock. Output is deterministic and
independent of call order: the same arguments give byte-identical samples, because each
utterance runs in a freshly loaded library (see ``_fresh_library``) with eSpeak's random seed
fixed (``espeak_ng_SetRandSeed(0)``). Processes (multiprocessing workers) each load their own.
"""

from __future__ import annotations

import _ctypes
import contextlib
import ctypes
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from speechmerge.data.audio import SAMPLE_RATE, resample

ESPEAK_RATE_HZ = 22_050

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "punctuation": 5, "capitals": 6, "wordgap": 7}
RATE_MIN, RATE_MAX = 80, 450  # espeakRATE_MINIMUM / MAXIMUM (words per minute)

#: project language code -> eSpeak NG voice (language) name. European Portuguese, Mandarin.
LANGUAGE_VOICES = {
    "en": "en-us",
    "ca": "ca",
    "de": "de",
    "es": "es",
    "fr": "fr",
    "it": "it",
    "id": "id",
    "nl": "nl",
    "pt": "pt",  # lang/roa/pt = Portuguese (Portugal); Brazilian is pt-BR
    "ru": "ru",
    "sv": "sv",
    "zh": "cmn",  # lang/sit/cmn = Mandarin
}


class SynthesisError(RuntimeError):
    """eSpeak NG could not synthesise the request (unknown language/variant, empty text, ...)."""


class _Event(ctypes.Structure):
    class _Id(ctypes.Union):
        _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _Id),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

_lock = threading.RLock()
_chunks: list[bytes] = []


def data_path() -> Path:
    """The ``espeak-ng-data`` directory shipped in the ``espeakng-loader`` wheel."""
    import espeakng_loader

    return Path(espeakng_loader.get_data_path())


def library_path() -> Path:
    import espeakng_loader

    return Path(espeakng_loader.get_library_path())


def _declare(lib) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
    lib.espeak_SetVoiceByProperties.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,  # const void *text
        ctypes.c_size_t,  # size_t size
        ctypes.c_uint,  # unsigned int position
        ctypes.c_int,  # espeak_POSITION_TYPE position_type
        ctypes.c_uint,  # unsigned int end_position
        ctypes.c_uint,  # unsigned int flags
        ctypes.POINTER(ctypes.c_uint),  # unsigned int *unique_identifier
        ctypes.c_void_p,  # void *user_data
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None


@_CALLBACK
def _on_audio(wav, numsamples, events):  # called by eSpeak inside espeak_Synth (same thread)
    if numsamples > 0 and wav:
        _chunks.append(ctypes.string_at(wav, numsamples * 2))
    return 0


_unload = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary")


@contextlib.contextmanager
def _fresh_library():
    """Load, initialise, yield, terminate and unload ``libespeak-ng`` (caller holds ``_lock``).

    eSpeak NG keeps synthesis state in static variables (waveform phase, gain control, cycle
    counters of its wave generator) that ``espeak_Initialize`` does not reset, so an utterance
    depends on what the process synthesised before. Unloading the library (``dlclose``) and
    loading it again restores its pristine data segment: every utterance is then independent of
    call order. A load + initialise + terminate + unload cycle costs about 0.5 ms.
    """
    lib = ctypes.CDLL(str(library_path()))
    rate = -1
    try:
        _declare(lib)
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path()).encode(), 0)
        if rate != ESPEAK_RATE_HZ:
            raise SynthesisError(f"espeak_Initialize({data_path()}) returned {rate}, expected {ESPEAK_RATE_HZ} Hz")
        lib.espeak_SetSynthCallback(_on_audio)
        yield lib
    finally:
        if rate > 0:
            lib.espeak_Terminate()  # frees eSpeak's buffers before the library goes away
        _unload(lib._handle)


@lru_cache(maxsize=None)
def _libc():
    libc = ctypes.CDLL(None)
    libc.srand.argtypes = [ctypes.c_uint]
    libc.srand.restype = None
    return libc


def _libc_srand(seed: int) -> None:
    """eSpeak NG also calls libc ``rand()`` (klatt noise); fix its seed too."""
    _libc().srand(seed)


def version() -> str:
    with _lock, _fresh_library() as lib:
        return lib.espeak_Info(None).decode()


@lru_cache(maxsize=None)
def _espeak_voice_names() -> frozenset[str]:
    """Lower-cased file names of eSpeak NG's language voices (``espeak-ng-data/lang/**``).

    ``espeak_SetVoiceByName`` accepts these (e.g. 'en-us', 'pt', 'pt-br', 'cmn', 'fr').
    """
    return frozenset(p.name.lower() for p in (data_path() / "lang").rglob("*") if p.is_file())


def available_languages() -> list[str]:
    """Project language codes (keys of ``LANGUAGE_VOICES``) whose eSpeak voice exists."""
    known = _espeak_voice_names()
    return sorted(code for code, voice in LANGUAGE_VOICES.items() if voice in known)


@lru_cache(maxsize=None)
def voice_variants() -> list[str]:
    """Names of the voice variants shipped in ``espeak-ng-data/voices/!v`` (m1..m8, f1..f5, klatt, ...)."""
    folder = data_path() / "voices" / "!v"
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def espeak_voice(language: str) -> str:
    """eSpeak voice name for a project language code (or an eSpeak voice file name used as is)."""
    voice = LANGUAGE_VOICES.get(language, str(language).lower())
    if voice not in _espeak_voice_names():
        raise SynthesisError(
            f"language {language!r} is not available in eSpeak NG "
            f"(project languages: {', '.join(available_languages())}; or an eSpeak voice such as 'pt-br')"
        )
    return voice


def synthesize(
    text: str,
    language: str,
    *,
    voice_variant: str | None = None,
    rate: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Render ``text`` in ``language`` to a float32 mono waveform at ``sample_rate`` (16 kHz).

    ``voice_variant``: a name from ``voice_variants()`` (e.g. 'm3', 'f2', 'klatt'); ``rate`` in
    words per minute (80..450); ``pitch`` (base pitch) and ``pitch_range`` in 0..100, 50 = normal.
    Samples are int16 / 32768 at 22 050 Hz, resampled with a polyphase filter (320/441).
    """
    if not isinstance(text, str) or not text.strip():
        raise SynthesisError(f"cannot synthesise empty text (language {language!r})")
    voice = espeak_voice(language)
    if voice_variant:
        if voice_variant not in voice_variants():
            raise SynthesisError(f"unknown eSpeak voice variant {voice_variant!r}; available: {voice_variants()}")
        voice = f"{voice}+{voice_variant}"
    if not RATE_MIN <= int(rate) <= RATE_MAX:
        raise SynthesisError(f"rate {rate} outside eSpeak's range {RATE_MIN}..{RATE_MAX} words/min")
    for name, value in (("pitch", pitch), ("pitch_range", pitch_range)):
        if not 0 <= int(value) <= 100:
            raise SynthesisError(f"{name} {value} outside 0..100")
    data = text.encode("utf-8") + b"\0"
    buf = ctypes.create_string_buffer(data, len(data))
    with _lock, _fresh_library() as lib:
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise SynthesisError(f"eSpeak NG rejected voice {voice!r} (language {language!r})")
        for key, value in (("rate", rate), ("pitch", pitch), ("range", pitch_range), ("volume", 100)):
            if lib.espeak_SetParameter(_PARAM[key], int(value), 0) != _EE_OK:
                raise SynthesisError(f"eSpeak NG rejected {key}={value}")
        lib.espeak_ng_SetRandSeed(0)
        _libc_srand(0)
        _chunks.clear()
        err = lib.espeak_Synth(
            ctypes.cast(buf, ctypes.c_void_p), len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        chunks = list(_chunks)
        _chunks.clear()
    if err != _EE_OK:
        raise SynthesisError(f"espeak_Synth failed with code {err} for {language!r} text {text[:40]!r}")
    pcm = np.frombuffer(b"".join(chunks), dtype=np.int16)
    if pcm.size == 0:
        raise SynthesisError(f"eSpeak NG produced no audio for {language!r} text {text[:40]!r}")
    wave = pcm.astype(np.float32) / 32768.0
    return resample(wave, ESPEAK_RATE_HZ, sample_rate)
