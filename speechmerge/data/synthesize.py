"""Build one dataset split from the parallel text corpus: eSpeak NG speech + an acoustic domain.

For each sentence of the split (corpus file order, first ``sentences``) and each rendering
k = 0..renderings-1, one utterance::

    voice  = sample_voice(seed, language, sid, k, split=split, profile=voice_profile)
    wave   = espeak.synthesize(text, language, **voice)                  # 16 kHz float32
    wave   = domain(wave, utterance_rng(seed, "domain", domain_name, language, sid, k))
    record = {id: f"{subset}-{sid}-r{k}", audio: FLAC bytes, language, domain, transcript: text,
              translation: English sentence, voice: voice.describe(), split, duration}

Every utterance depends only on (seed, language, sentence, rendering, voice profile, split's
speaker pool, domain), never on the other utterances or their order, so the same arguments give
byte-identical records, with or without worker processes. Test speakers are held out
(``speechmerge.data.voices``). Splits are by sentence (the corpus's ``split`` column).

Babble needs other talkers: the pool is the clean renderings of the first ``BABBLE_POOL``
*train* sentences of the same language (voices from the split's speaker pool), the same for
every utterance and independent of the split's size.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from speechmerge.data import espeak
from speechmerge.data.audio import SAMPLE_RATE, encode_flac
from speechmerge.data.domains import Domain, build_domain
from speechmerge.data.voices import sample_voice, utterance_rng

log = logging.getLogger(__name__)

BABBLE_POOL = 16


def utterance_id(subset: str, sid: str, rendering: int) -> str:
    return f"{subset}-{sid}-r{rendering}"


def babble_pool(
    corpus_path, language: str, *, split: str, seed: int, voice_profile: str, size: int = BABBLE_POOL
) -> list[np.ndarray]:
    """Clean renderings of the first ``size`` train sentences (fewer if the split is smaller)."""
    from speechmerge.data.corpus import load_corpus, sentences

    n_train = int((load_corpus(corpus_path)["split"] == "train").sum())
    rows = sentences(corpus_path, language, "train", n=min(size, n_train)) if n_train else []
    pool = []
    for sid, text, _ in rows:
        voice = sample_voice(seed, language, f"babble:{sid}", 0, split=split, profile=voice_profile)
        pool.append(espeak.synthesize(text, language, **voice.synth_kwargs()))
    return pool


# state of a worker process (or of the main process when workers <= 1)
_job: dict = {}


def _init_job(job: dict) -> None:
    _job.clear()
    _job.update(job)


def _render(item: tuple[str, str, str, int]) -> dict:
    sid, text, english, k = item
    j = _job
    voice = sample_voice(j["seed"], j["language"], sid, k, split=j["split"], profile=j["voice_profile"])
    wave = espeak.synthesize(text, j["language"], **voice.synth_kwargs())
    rng = utterance_rng(j["seed"], "domain", j["domain_name"], j["language"], sid, k)
    wave = j["domain"](wave, rng)
    return {
        "id": utterance_id(j["subset"], sid, k),
        "audio": {"bytes": encode_flac(wave, SAMPLE_RATE), "path": None},
        "language": j["language"],
        "domain": j["domain_name"],
        "transcript": text,
        "translation": english,
        "voice": voice.describe(),
        "split": j["split"],
        "duration": round(len(wave) / SAMPLE_RATE, 6),
    }


def synthesize_split(
    corpus_path,
    *,
    language: str,
    domain_transforms: Sequence[dict] | None,
    split: str,
    sentences: int | None = None,
    renderings: int = 1,
    seed: int = 0,
    voice_profile: str = "adult",
    domain_name: str = "clean",
    experiment: str = "",
    subset: str = "",
    workers: int = 1,
    progress: bool = True,
) -> list[dict]:
    """Records (``speechmerge.data.io.COLUMNS``) of one synthetic split, in (sentence, rendering) order.

    ``domain_transforms``: list of transform configs (``speechmerge.data.domains``);
    ``sentences``: the first n sentences of the corpus split (None = all); ``subset`` prefixes
    ids (defaults to the language code); ``workers`` > 1 renders in that many processes
    (same output). ``experiment`` only labels the progress bar and log.
    """
    from speechmerge.data.corpus import sentences as corpus_sentences

    if renderings < 1:
        raise ValueError(f"renderings must be at least 1, got {renderings}")
    espeak.espeak_voice(language)  # unknown language: fail before any work
    subset = subset or language
    domain: Domain = build_domain(domain_transforms, name=domain_name)
    rows = corpus_sentences(corpus_path, language, split, n=sentences)
    if domain.needs_pool:
        domain.pool = babble_pool(corpus_path, language, split=split, seed=seed, voice_profile=voice_profile)
    job = {
        "seed": int(seed),
        "language": language,
        "split": split,
        "voice_profile": voice_profile,
        "domain_name": domain_name,
        "domain": domain,
        "subset": subset,
    }
    items = [(sid, text, english, k) for sid, text, english in rows for k in range(renderings)]
    label = "/".join(p for p in (experiment, subset, split) if p)
    log.info(
        "synthesising %s: %d sentences x %d renderings, language %s, domain %s (%s), voices %s, %d worker(s)",
        label,
        len(rows),
        renderings,
        language,
        domain_name,
        domain.config(),
        voice_profile,
        workers,
    )
    bar = tqdm(total=len(items), desc=f"synth {label}", unit="utt", disable=not progress)
    records = []
    try:
        if workers <= 1 or len(items) < 2 * workers:
            _init_job(job)
            for item in items:
                records.append(_render(item))
                bar.update()
        else:
            ctx = mp.get_context("fork" if os.name == "posix" else "spawn")
            # maxtasksperchild: eSpeak NG leaks ~3 kB per voice load, recycle workers now and then
            with ctx.Pool(workers, initializer=_init_job, initargs=(job,), maxtasksperchild=250) as pool:
                for rec in pool.imap(_render, items, chunksize=8):
                    records.append(rec)
                    bar.update()
    finally:
        bar.close()
    return records
