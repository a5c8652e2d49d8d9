"""Corpus-level ASR and ST metrics: WER / CER after Whisper's text normalisers, BLEU / chrF.

Conventions (all scores are percentages, 0-100):

* **Normalisation** (Radford et al. 2022, appendix C; the normalisers shipped with
  ``transformers``): English references and hypotheses go through ``EnglishTextNormalizer``,
  every other language through ``BasicTextNormalizer`` (lower-case, punctuation and symbols
  removed, whitespace collapsed, diacritics kept).
  ``EnglishTextNormalizer`` takes a British->American spelling map that normally comes with the
  tokenizer (``normalizer.json``). Offline there is none, so ``english_spelling_mapping`` looks for
  it, in order, in an explicit file / the model directory's ``normalizer.json`` / the
  ``openai-whisper`` package (``whisper/normalizers/english.json``) and otherwise uses an empty
  map: numbers, contractions, titles, fillers etc. are still normalised, only spelling variants
  such as "colour"/"color" are not merged. Which map was used is recorded (``describe_normalizer``).
* **WER** = (S + D + I) / N summed over the corpus, N = number of reference words: corpus WER is
  total edits over total reference words (not the mean of utterance WERs).
* **CER** is the same on characters. For languages written without spaces (``UNSEGMENTED``: zh,
  ja, th, ...) the normalised text is split into characters with all whitespace removed; for the
  others the characters of the normalised text are compared with single spaces kept as
  characters (the ``jiwer.cer`` convention). For unsegmented languages the "words" of WER are
  the characters too (``BasicTextNormalizer(split_letters=True)``), so WER = CER there;
  ``primary_error_metric`` says which one a table should show.
* **BLEU / chrF**: sacrebleu on the raw (detokenised, cased) text, one reference per segment,
  ``tokenize`` = ``13a`` (``zh`` for Chinese targets, ``char`` for other unsegmented targets);
  the signature strings are returned and must be stored next to the score.

Functions take ``references`` first, then ``hypotheses`` (the jiwer order); ``ids`` name the
utterances in error messages. An empty reference raises ``ValueError`` naming the utterance.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from speechmerge.names import retention_language

UNSEGMENTED = frozenset({"zh", "ja", "th", "lo", "my", "km", "yue", "bo"})
"""Languages written without spaces between words: error rates are computed on characters."""

ENGLISH = "en"


# --------------------------------------------------------------------------- normalisers


def _openai_whisper_mapping_path() -> Path | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("whisper.normalizers")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "english.json"
    return path if path.exists() else None


@functools.lru_cache(maxsize=16)
def _load_mapping(path: str) -> tuple[tuple[str, str], ...]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: English spelling map must be a JSON object (word -> word)")
    return tuple(sorted(data.items()))


def english_spelling_mapping(source: str | os.PathLike | None = None) -> tuple[dict[str, str], str]:
    """The British->American spelling map for ``EnglishTextNormalizer`` and where it came from.

    ``source`` is a JSON file or a model directory (its ``normalizer.json``). Without one, the
    ``openai-whisper`` package's copy is used when installed, else an empty map.
    """
    candidates: list[Path] = []
    if source is not None:
        p = Path(source)
        candidates.append(p / "normalizer.json" if p.is_dir() else p)
    whisper_path = _openai_whisper_mapping_path()
    if whisper_path is not None:
        candidates.append(whisper_path)
    for path in candidates:
        if path.is_file():
            return dict(_load_mapping(str(path))), str(path)
    return {}, "none (empty map: spelling variants are not merged)"


@functools.lru_cache(maxsize=1)
def _whisper_normalizers():
    """transformers' ``BasicTextNormalizer`` and ``EnglishTextNormalizer``. Their module needs only
    the standard library and ``regex``; unless transformers is loaded already, it is loaded from the
    installed package by its file, so that scoring does not import transformers (about 1 s)."""
    import importlib
    import importlib.util
    import sys

    name = "transformers.models.whisper.english_normalizer"
    if "transformers" in sys.modules:
        mod = importlib.import_module(name)
    else:
        package = importlib.util.find_spec("transformers")
        if package is None or not package.submodule_search_locations:
            raise ImportError("transformers is not installed: Whisper's text normalisers come from it")
        path = Path(package.submodule_search_locations[0]) / "models" / "whisper" / "english_normalizer.py"
        spec = importlib.util.spec_from_file_location("speechmerge._whisper_english_normalizer", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    return mod.BasicTextNormalizer, mod.EnglishTextNormalizer


@functools.lru_cache(maxsize=64)
def _normalizer(language: str, split_letters: bool, mapping_source: str | None) -> Callable[[str], str]:
    BasicTextNormalizer, EnglishTextNormalizer = _whisper_normalizers()

    if language == ENGLISH and not split_letters:
        mapping, _ = english_spelling_mapping(mapping_source)
        return EnglishTextNormalizer(mapping)
    return BasicTextNormalizer(remove_diacritics=False, split_letters=split_letters)


def base_language(language: str) -> str:
    """``"pt-PT"`` / ``"lang_pt"`` / ``"PT"`` -> ``"pt"`` (the part that picks the normaliser)."""
    code = str(language).strip().lower()
    code = retention_language(code) or code
    return code.replace("_", "-").split("-")[0]


def normalizer_for(language: str, *, spelling_source: str | os.PathLike | None = None) -> Callable[[str], str]:
    """Whisper's normaliser for ``language`` (English one for ``en``, basic one otherwise)."""
    lang = base_language(language)
    return _normalizer(lang, lang in UNSEGMENTED, None if spelling_source is None else str(spelling_source))


def describe_normalizer(language: str, *, spelling_source: str | os.PathLike | None = None) -> str:
    """A human-readable record of the normaliser used (stored in the scores JSON)."""
    lang = base_language(language)
    if lang == ENGLISH:
        _, where = english_spelling_mapping(spelling_source)
        return f"whisper EnglishTextNormalizer (spelling map: {where})"
    if lang in UNSEGMENTED:
        return "whisper BasicTextNormalizer(split_letters=True), whitespace removed for CER"
    return "whisper BasicTextNormalizer(remove_diacritics=False)"


def normalize(texts: Sequence[str], language: str, *, spelling_source=None) -> list[str]:
    norm = normalizer_for(language, spelling_source=spelling_source)
    return [" ".join(norm(t).split()) for t in texts]


def primary_error_metric(language: str) -> str:
    """``"cer"`` for unsegmented languages, else ``"wer"``."""
    return "cer" if base_language(language) in UNSEGMENTED else "wer"


# --------------------------------------------------------------------------- error counts


@dataclass(frozen=True)
class ErrorCounts:
    """Per-utterance edit counts (S + D + I) and reference lengths (words or characters)."""

    edits: np.ndarray  # int64 [n]
    ref_len: np.ndarray  # int64 [n]

    @property
    def rate(self) -> float:
        """Corpus error rate in percent: 100 * sum(edits) / sum(ref_len)."""
        return 100.0 * float(self.edits.sum()) / float(self.ref_len.sum())

    def __len__(self) -> int:
        return int(self.edits.shape[0])


def _check_lengths(references, hypotheses, ids):
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if ids is not None and len(ids) != len(references):
        raise ValueError(f"{len(ids)} ids but {len(references)} references")
    if len(references) == 0:
        raise ValueError("no utterances to score")


def _name(ids, i) -> str:
    return repr(ids[i]) if ids is not None else f"#{i}"


def _edits_from_alignments(alignments) -> np.ndarray:
    out = np.zeros(len(alignments), dtype=np.int64)
    for i, chunks in enumerate(alignments):
        e = 0
        for c in chunks:
            if c.type in ("substitute", "delete"):
                e += c.ref_end_idx - c.ref_start_idx
            elif c.type == "insert":
                e += c.hyp_end_idx - c.hyp_start_idx
        out[i] = e
    return out


def error_counts(
    references: Sequence[str],
    hypotheses: Sequence[str],
    language: str | Sequence[str],
    *,
    unit: str = "word",
    ids: Sequence[str] | None = None,
    spelling_source=None,
) -> ErrorCounts:
    """Normalise and align each pair; return per-utterance edits and reference lengths.

    ``language`` is one code for all utterances or one per utterance. ``unit`` is ``"word"``
    (WER) or ``"char"`` (CER). Raises ``ValueError`` naming the utterance if a reference is
    empty before or after normalisation.
    """
    import jiwer

    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    _check_lengths(references, hypotheses, ids)
    langs = [language] * len(references) if isinstance(language, str) else list(language)
    if len(langs) != len(references):
        raise ValueError(f"{len(langs)} languages but {len(references)} references")
    refs, hyps = [], []
    for i, (r, h, lang) in enumerate(zip(references, hypotheses, langs)):
        if r is None or not str(r).strip():
            raise ValueError(f"utterance {_name(ids, i)}: empty reference")
        norm = normalizer_for(lang, spelling_source=spelling_source)
        rn, hn = " ".join(norm(str(r)).split()), " ".join(norm(str(h or "")).split())
        if unit == "char" and base_language(lang) in UNSEGMENTED:
            rn, hn = rn.replace(" ", ""), hn.replace(" ", "")
        if not rn:
            raise ValueError(f"utterance {_name(ids, i)}: reference {str(r)!r} is empty after normalisation ({lang})")
        refs.append(rn)
        hyps.append(hn)
    if unit == "word":
        out = jiwer.process_words(refs, hyps)
    else:
        out = jiwer.process_characters(refs, hyps)
    ref_len = np.asarray([len(r) for r in out.references], dtype=np.int64)
    return ErrorCounts(_edits_from_alignments(out.alignments), ref_len)


def wer(references, hypotheses, language, *, ids=None, spelling_source=None) -> float:
    """Corpus WER in percent: total word edits / total reference words x 100."""
    return error_counts(references, hypotheses, language, unit="word", ids=ids, spelling_source=spelling_source).rate


def cer(references, hypotheses, language, *, ids=None, spelling_source=None) -> float:
    """Corpus CER in percent: total character edits / total reference characters x 100."""
    return error_counts(references, hypotheses, language, unit="char", ids=ids, spelling_source=spelling_source).rate


# --------------------------------------------------------------------------- BLEU / chrF


def bleu_tokenizer(target_language: str) -> str:
    lang = base_language(target_language)
    if lang in ("zh", "yue"):
        return "zh"
    if lang in UNSEGMENTED:
        return "char"
    return "13a"


def _check_text(references, hypotheses, ids):
    _check_lengths(references, hypotheses, ids)
    for i, r in enumerate(references):
        if r is None or not str(r).strip():
            raise ValueError(f"utterance {_name(ids, i)}: empty reference")
    return [str(r) for r in references], [str(h or "") for h in hypotheses]


@functools.lru_cache(maxsize=8)
def bleu_metric(target_language: str = "en"):
    """The sacrebleu ``BLEU`` object used everywhere (defaults; tokeniser by target language)."""
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=bleu_tokenizer(target_language))


@functools.lru_cache(maxsize=8)
def chrf_metric():
    from sacrebleu.metrics import CHRF

    return CHRF()


def bleu(references, hypotheses, target_language: str = "en", *, ids=None) -> tuple[float, str]:
    """Corpus BLEU (sacrebleu defaults) and its signature."""
    refs, hyps = _check_text(references, hypotheses, ids)
    metric = bleu_metric(target_language)
    return float(metric.corpus_score(hyps, [refs]).score), str(metric.get_signature())


def chrf(references, hypotheses, *, ids=None) -> tuple[float, str]:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta = 2) and its signature."""
    refs, hyps = _check_text(references, hypotheses, ids)
    metric = chrf_metric()
    return float(metric.corpus_score(hyps, [refs]).score), str(metric.get_signature())


def sentence_stats(metric, references, hypotheses, *, ids=None) -> np.ndarray:
    """Per-segment sufficient statistics of a sacrebleu metric, shape [n, k] (int64).

    Their column sums give the corpus score (``score_from_stats``), which is what makes a
    bootstrap over segments exact. Uses sacrebleu's own statistics extraction (the functions
    its paired-bootstrap significance test uses).
    """
    refs, hyps = _check_text(references, hypotheses, ids)
    if not hasattr(metric, "_extract_corpus_statistics"):
        raise RuntimeError(
            f"sacrebleu {type(metric).__name__} lacks _extract_corpus_statistics; "
            "this sacrebleu version is not supported"
        )
    return np.asarray(metric._extract_corpus_statistics(hyps, [refs]), dtype=np.int64)


def score_from_stats(metric, stats_sum: Sequence[int] | np.ndarray) -> float:
    """Corpus score from summed sufficient statistics (inverse of ``sentence_stats``)."""
    return float(metric._compute_score_from_stats(list(np.asarray(stats_sum))).score)


# --------------------------------------------------------------------------- one call


def score_texts(
    references: Sequence[str],
    hypotheses: Sequence[str],
    *,
    task: str,
    language: str | Sequence[str],
    ids: Sequence[str] | None = None,
    spelling_source=None,
) -> dict:
    """The metrics of one test set: ``{"wer", "cer"}`` for transcribe, ``{"bleu", "chrf"}`` for
    translate (target English), plus signatures / normaliser descriptions under ``"info"``."""
    if task == "transcribe":
        w = error_counts(references, hypotheses, language, unit="word", ids=ids, spelling_source=spelling_source)
        c = error_counts(references, hypotheses, language, unit="char", ids=ids, spelling_source=spelling_source)
        langs = sorted({language} if isinstance(language, str) else set(language))
        return {
            "metrics": {"wer": w.rate, "cer": c.rate},
            "info": {
                "normalizer": {l: describe_normalizer(l, spelling_source=spelling_source) for l in langs},
                "primary_metric": primary_error_metric(langs[0]) if len(langs) == 1 else "wer",
                "ref_words": int(w.ref_len.sum()),
                "ref_chars": int(c.ref_len.sum()),
            },
        }
    if task == "translate":
        b, bsig = bleu(references, hypotheses, "en", ids=ids)
        f, fsig = chrf(references, hypotheses, ids=ids)
        return {
            "metrics": {"bleu": b, "chrf": f},
            "info": {"bleu_signature": bsig, "chrf_signature": fsig, "primary_metric": "bleu"},
        }
    raise ValueError(f"unknown task {task!r} (expected 'transcribe' or 'translate')")
