"""The checked-in parallel text corpus (``resources/text/corpus.tsv``) and its validator.

Format: tab-separated UTF-8 with the header ``sid split en ca de es fr it id nl pt ru sv zh``.
One row is one sentence tuple: a stable id (``s0001``...), a fixed split (``train``, ``dev``,
``test``) and the same sentence in the twelve languages. Fields are never quoted (an apostrophe
or a quotation mark is literal text). The sentence-id column is ``sid`` because ``id`` is the
Indonesian language code.

The text is what eSpeak NG reads aloud and what WER and BLEU are scored against, so
``validate_corpus`` holds it to a few rules (see its docstring): the right script per language,
no digits, no symbols, quotes or brackets, English sentences of 4 to 16 words, no duplicate
sentence within a language, and enough sentences in each split.
"""

from __future__ import annotations

import csv
import os
import re
import unicodedata
from pathlib import Path

import pandas as pd

#: The twelve language codes, in column order: English plus the eleven translations.
LANGUAGES: tuple[str, ...] = ("en", "ca", "de", "es", "fr", "it", "id", "nl", "pt", "ru", "sv", "zh")
#: The columns every corpus file must have, in this order.
COLUMNS: tuple[str, ...] = ("sid", "split") + LANGUAGES
#: Minimum number of sentence tuples per split.
MIN_SPLIT_SIZES: dict[str, int] = {"train": 220, "dev": 30, "test": 50}
SPLITS: tuple[str, ...] = tuple(MIN_SPLIT_SIZES)
#: Script each language must be written in (letters of any other script are an error).
SCRIPTS: dict[str, str] = {lang: "Latin" for lang in LANGUAGES} | {"ru": "Cyrillic", "zh": "Han"}
MIN_WORDS, MAX_WORDS = 4, 16

_SID = re.compile(r"^s\d{4,}$")
#: The only non-letter characters allowed besides the space: sentence punctuation, apostrophes,
#: hyphens and dashes, the Spanish inverted marks, the Catalan middle dot (l·l) and the
#: full-width Chinese marks. Everything else (digits, symbols such as & % € #, brackets,
#: quotation marks, tabs) would be read out by eSpeak NG or break the references.
ALLOWED_PUNCTUATION = frozenset(".,?!;:'’-–—…¿¡·，。？！、：；")


class CorpusError(ValueError):
    """The corpus file is unreadable or breaks one of the rules; the message lists every problem."""


def _script_of(ch: str) -> str | None:
    """The script of a letter, from its Unicode name (None if the name says neither)."""
    name = unicodedata.name(ch, "")
    if name.startswith("LATIN"):
        return "Latin"
    if name.startswith("CYRILLIC"):
        return "Cyrillic"
    if name.startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH")):
        return "Han"
    return None


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, data rows and structural problems (wrong field count) of a TSV file."""
    if not path.is_file():
        raise CorpusError(f"{path}: corpus file not found")
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
            lines = list(reader)
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not valid UTF-8 ({err})") from err
    if not lines:
        raise CorpusError(f"{path}: empty file (expected the header {' '.join(COLUMNS)})")
    header, body = lines[0], lines[1:]
    problems, rows = [], []
    for lineno, row in enumerate(body, start=2):
        if row == [] or row == [""]:
            problems.append(f"line {lineno}: blank line")
            continue
        if len(row) != len(header):
            problems.append(f"line {lineno}: {len(row)} fields, header has {len(header)}")
            continue
        rows.append(row)
    return header, rows, problems


def _frame(header: list[str], rows: list[list[str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=header, dtype=str).reset_index(drop=True)


def load_corpus(path: str | os.PathLike) -> pd.DataFrame:
    """Read the corpus as a DataFrame of strings, one row per tuple, in file order.

    ``sid`` stays an ordinary column (not the index). Only the file's structure is checked here
    (it exists, is UTF-8, has the required columns and the same number of fields on every line);
    ``check_corpus`` checks the content.
    """
    path = Path(path)
    header, rows, problems = _read_rows(path)
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        problems.insert(0, f"missing columns: {', '.join(missing)}")
    if problems:
        raise CorpusError(f"{path}: " + "; ".join(problems))
    return _frame(header, rows)


def _text_problems(text: str, lang: str) -> list[str]:
    """Problems of one cell: whitespace, normal form, wrong script, characters not allowed.

    Letters are told apart by script through their Unicode names; combining marks are allowed
    (they belong to the letter before them).
    """
    out = []
    if text != text.strip() or "  " in text:
        out.append("leading, trailing or double spaces")
    if unicodedata.normalize("NFC", text) != text:
        out.append("not in Unicode NFC")
    want = SCRIPTS[lang]
    bad_script, bad_other = [], []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch == " " or cat.startswith("M"):
            continue
        if cat.startswith("L"):
            if _script_of(ch) != want:
                bad_script.append(ch)
        elif cat.startswith("N"):
            bad_other.append(ch)  # digits and other numerals: write numbers as words
        elif ch in ALLOWED_PUNCTUATION:
            continue
        else:
            bad_other.append(ch)  # symbols, brackets, quotes, tabs, control characters
    if bad_script:
        chars = "".join(dict.fromkeys(bad_script))
        out.append(f"letters not in {want} script: {chars!r}")
    if bad_other:
        chars = "".join(dict.fromkeys(bad_other))
        out.append(f"characters not allowed (digits, symbols, quotes, brackets): {chars!r}")
    return out


def _dedup_key(text: str) -> str:
    """Case-folded letters only: two sentences that differ only in case or punctuation collide."""
    return "".join(ch for ch in text.casefold() if unicodedata.category(ch)[0] in "LM")


def english_word_count(text: str) -> int:
    """Whitespace-separated tokens that contain at least one letter."""
    return sum(any(c.isalpha() for c in tok) for tok in text.split())


def validate_corpus(path: str | os.PathLike) -> list[str]:
    """Every problem of the corpus file at ``path`` (an empty list when it is valid).

    Checks:
    * the file exists, is UTF-8, has the columns ``sid split`` + ``LANGUAGES`` and the same
      number of fields on every line (no blank lines);
    * ``sid`` matches ``s`` + at least four digits and is unique;
    * ``split`` is one of ``train``, ``dev``, ``test`` and each split has at least
      ``MIN_SPLIT_SIZES`` tuples (220 / 30 / 50);
    * no empty cell (the problem names the sid and the language);
    * every letter is in the language's script (Cyrillic for ru, Han for zh, Latin elsewhere);
      besides letters and single spaces only ``ALLOWED_PUNCTUATION`` may occur (no digits,
      symbols, brackets or quotation marks); no leading, trailing or double spaces; Unicode NFC;
    * English sentences have 4 to 16 words;
    * no two sentences of one language are equal up to case, spaces and punctuation (the problem
      names both sids).
    """
    path = Path(path)
    try:
        header, rows, problems = _read_rows(path)
    except CorpusError as err:
        return [str(err)]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        problems.insert(0, f"missing columns: {', '.join(missing)}")
        if "sid" not in header:
            return problems
    df = _frame(header, rows)
    langs = [lang for lang in LANGUAGES if lang in df.columns]

    seen_sid: dict[str, int] = {}
    for i, sid in enumerate(df["sid"]):
        if not _SID.match(sid):
            problems.append(f"row {i + 1}: malformed sid {sid!r} (expected s0001, s0002, ...)")
        if sid in seen_sid:
            problems.append(f"duplicate sid {sid!r} (rows {seen_sid[sid] + 1} and {i + 1})")
        else:
            seen_sid[sid] = i

    if "split" in df.columns:
        for sid, split in zip(df["sid"], df["split"]):
            if split not in SPLITS:
                problems.append(f"{sid}: unknown split {split!r} (expected one of {', '.join(SPLITS)})")
        counts = df["split"].value_counts()
        for split, minimum in MIN_SPLIT_SIZES.items():
            have = int(counts.get(split, 0))
            if have < minimum:
                problems.append(f"split {split!r} has {have} sentences, needs at least {minimum}")

    for lang in langs:
        first_of: dict[str, str] = {}
        for sid, text in zip(df["sid"], df[lang]):
            if not text.strip():
                problems.append(f"{sid} [{lang}]: empty cell")
                continue
            problems.extend(f"{sid} [{lang}]: {p}" for p in _text_problems(text, lang))
            if lang == "en":
                n = english_word_count(text)
                if not MIN_WORDS <= n <= MAX_WORDS:
                    problems.append(f"{sid} [en]: {n} words (allowed {MIN_WORDS} to {MAX_WORDS})")
            key = _dedup_key(text)
            if key in first_of:
                problems.append(f"{sid} [{lang}]: duplicate of {first_of[key]} ({text!r})")
            else:
                first_of[key] = sid
    return problems


def interleaved_splits(n: int, train: int = 220, dev: int = 30) -> list[str]:
    """Split labels for ``n`` tuples in file order: ``train`` train, ``dev`` dev, the rest test.

    Smooth weighted round robin (the interleaving nginx uses for weighted servers): every split
    earns its size at each row, the split with the most credit (ties: train, dev, test) takes the
    row and pays ``n``. The counts come out exact and each split is spread evenly over the file,
    so topics written in consecutive batches land in every split. This is how the ``split``
    column of the checked-in corpus was filled (``interleaved_splits(320)``).
    """
    test = n - train - dev
    if min(train, dev, test) < 0:
        raise ValueError(f"cannot split {n} tuples into {train} train + {dev} dev + a non-negative test")
    sizes = {"train": train, "dev": dev, "test": test}
    credit = dict.fromkeys(sizes, 0)
    labels = []
    for _ in range(n):
        for split, size in sizes.items():
            credit[split] += size
        best = max(sizes, key=lambda s: credit[s])  # first maximum wins: train, dev, test
        credit[best] -= n
        labels.append(best)
    return labels


def check_corpus(path: str | os.PathLike) -> None:
    """Raise ``CorpusError`` listing every problem ``validate_corpus`` finds (one per line)."""
    problems = validate_corpus(path)
    if problems:
        listing = "\n  ".join(problems)
        raise CorpusError(f"{path}: {len(problems)} problem(s):\n  {listing}")


def sentences(path: str | os.PathLike, language: str, split: str, n: int | None = None) -> list[tuple[str, str, str]]:
    """``(sid, text in language, English text)`` for the first ``n`` tuples of ``split``.

    File order; ``n=None`` takes the whole split. An unknown language or split, an ``n`` larger
    than the split, or an empty cell among the chosen tuples is a ``CorpusError``.
    Run ``check_corpus`` for the full content check; this only reads.
    """
    if language not in LANGUAGES:
        raise CorpusError(f"unknown language code {language!r}; the corpus has {', '.join(LANGUAGES)}")
    if split not in SPLITS:
        raise CorpusError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    df = load_corpus(path)
    part = df[df["split"] == split]
    if n is not None:
        if n < 1:
            raise CorpusError(f"n must be at least 1, got {n}")
        if n > len(part):
            raise CorpusError(f"{path}: asked for {n} sentences of split {split!r}, it has {len(part)}")
        part = part.iloc[:n]
    out = []
    for sid, text, english in zip(part["sid"], part[language], part["en"]):
        if not text.strip() or not english.strip():
            lang = language if not text.strip() else "en"
            raise CorpusError(f"{path}: {sid} [{lang}]: empty cell")
        out.append((sid, text, english))
    return out
