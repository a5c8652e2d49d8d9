"""The checked-in parallel corpus and its validator (speechmerge.data.corpus)."""

from __future__ import annotations

import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from speechmerge.data.corpus import (
    COLUMNS,
    LANGUAGES,
    CorpusError,
    check_corpus,
    interleaved_splits,
    load_corpus,
    sentences,
    validate_corpus,
)

CORPUS = Path(__file__).resolve().parents[1] / "resources" / "text" / "corpus.tsv"


# --------------------------------------------------------------------------- the real file


def test_checked_in_corpus_passes_the_validator():
    assert validate_corpus(CORPUS) == []
    check_corpus(CORPUS)  # does not raise


def test_checked_in_corpus_shape_and_splits():
    df = load_corpus(CORPUS)
    assert tuple(df.columns) == COLUMNS
    assert len(df) >= 310
    counts = df["split"].value_counts().to_dict()
    assert counts["train"] == 220 and counts["dev"] == 30 and counts["test"] >= 60
    assert list(df["sid"]) == [f"s{i:04d}" for i in range(1, len(df) + 1)]
    assert all(isinstance(v, str) for col in df.columns for v in df[col])


def test_checked_in_splits_are_the_documented_interleaving():
    df = load_corpus(CORPUS)
    assert list(df["split"]) == interleaved_splits(len(df))


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_sentences_has_the_same_ids_in_every_language(split):
    reference = sentences(CORPUS, "en", split)
    ids = [sid for sid, _, _ in reference]
    english = [en for _, _, en in reference]
    assert len(ids) == len(set(ids)) > 0
    for lang in LANGUAGES:
        got = sentences(CORPUS, lang, split)
        assert [sid for sid, _, _ in got] == ids, lang
        assert [en for _, _, en in got] == english, lang  # third field is always the English
        assert all(text.strip() for _, text, _ in got), lang


def test_sentences_first_n_in_file_order():
    df = load_corpus(CORPUS)
    dev = df[df["split"] == "dev"]
    got = sentences(CORPUS, "id", "dev", n=5)  # "id" is Indonesian, not the sid column
    assert [g[0] for g in got] == list(dev["sid"][:5])
    assert [g[1] for g in got] == list(dev["id"][:5])
    assert [g[2] for g in got] == list(dev["en"][:5])
    assert sentences(CORPUS, "zh", "test", n=1)[0][0] == df[df["split"] == "test"]["sid"].iloc[0]


def test_sentences_rejects_unknown_language_split_and_too_large_n():
    with pytest.raises(CorpusError, match=r"unknown language code 'xx'"):
        sentences(CORPUS, "xx", "train")
    with pytest.raises(CorpusError, match=r"unknown language code 'pt_br'"):
        sentences(CORPUS, "pt_br", "test")
    with pytest.raises(CorpusError, match=r"unknown split 'validation'"):
        sentences(CORPUS, "de", "validation")
    with pytest.raises(CorpusError, match=r"asked for 31 sentences of split 'dev', it has 30"):
        sentences(CORPUS, "de", "dev", n=31)
    with pytest.raises(CorpusError, match=r"n must be at least 1"):
        sentences(CORPUS, "de", "dev", n=0)


def test_scripts_of_the_checked_in_text():
    df = load_corpus(CORPUS)
    for text in df["ru"]:
        assert any("CYRILLIC" in unicodedata.name(c, "") for c in text)
    for text in df["zh"]:
        assert " " not in text and any("CJK" in unicodedata.name(c, "") for c in text)


# --------------------------------------------------------------------------- corrupt files


def _base_rows(k: int = 4) -> list[dict[str, str]]:
    """The first k tuples of the real corpus, as editable dicts."""
    return load_corpus(CORPUS).head(k).to_dict("records")


def _write(tmp_path: Path, rows: list[dict[str, str]], columns=COLUMNS, name="c.tsv") -> Path:
    path = tmp_path / name
    lines = ["\t".join(columns)] + ["\t".join(r[c] for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _problems(tmp_path, rows, **kw) -> list[str]:
    path = _write(tmp_path, rows, **kw)
    problems = validate_corpus(path)
    with pytest.raises(CorpusError) as info:
        check_corpus(path)
    for p in problems:  # check_corpus lists every problem validate_corpus finds
        assert p in str(info.value)
    return problems


def _one(problems: list[str], *needles: str) -> str:
    hits = [p for p in problems if all(n in p for n in needles)]
    assert len(hits) == 1, (needles, problems)
    return hits[0]


def test_missing_columns_are_named(tmp_path):
    cols = tuple(c for c in COLUMNS if c not in ("sv", "zh"))
    problems = _problems(tmp_path, _base_rows(), columns=cols)
    assert _one(problems, "missing columns") == "missing columns: sv, zh"
    with pytest.raises(CorpusError, match="missing columns: sv, zh"):
        load_corpus(tmp_path / "c.tsv")


def test_empty_cell_names_sid_and_language(tmp_path):
    rows = _base_rows()
    rows[1]["de"] = ""
    rows[3]["zh"] = "  "
    problems = _problems(tmp_path, rows)
    assert _one(problems, "empty cell", "[de]") == f"{rows[1]['sid']} [de]: empty cell"
    assert _one(problems, "empty cell", "[zh]").startswith(f"{rows[3]['sid']} [zh]")


@pytest.mark.parametrize(
    "lang, text, script",
    [
        ("ru", "Privet, kak dela?", "Cyrillic"),
        ("ru", "Я люблю кoфe.", "Cyrillic"),  # Latin o and e hidden among Cyrillic letters
        ("zh", "我喜欢coffee。", "Han"),
        ("zh", "私はコーヒーが好きです。", "Han"),  # Japanese kana are not Han
        ("de", "Ich trinke Кaffee.", "Latin"),  # Cyrillic К
        ("fr", "Je bois du café αlpha.", "Latin"),
    ],
)
def test_wrong_script_names_sid_language_and_script(tmp_path, lang, text, script):
    rows = _base_rows()
    rows[2][lang] = text
    problems = _problems(tmp_path, rows)
    msg = _one(problems, f"{rows[2]['sid']} [{lang}]", "script")
    assert f"not in {script} script" in msg


@pytest.mark.parametrize(
    "lang, text, bad",
    [
        ("en", "I have 2 cats and a dog.", "2"),
        ("zh", "我有２只猫。", "２"),
        ("ru", "У меня 3 кошки.", "3"),
        ("fr", "Il coûte dix euros (environ).", "("),
        ("es", 'Dijo "hola" al entrar.', '"'),
        ("de", "Er sagte «hallo» zu mir.", "«"),
        ("it", "Costa dieci € al chilo.", "€"),
        ("nl", "Wij & zij gaan samen.", "&"),  # & is Unicode punctuation, still banned
        ("sv", "Det kostar tio procent%.", "%"),
        ("pt", "Comprei pão e leite/ovos.", "/"),
    ],
)
def test_digits_symbols_quotes_and_brackets_are_rejected(tmp_path, lang, text, bad):
    rows = _base_rows()
    rows[0][lang] = text
    problems = _problems(tmp_path, rows)
    msg = _one(problems, f"{rows[0]['sid']} [{lang}]", "not allowed")
    assert repr(bad)[1:-1] in msg


def test_sentence_punctuation_is_allowed(tmp_path):
    rows = _base_rows()
    rows[0]["es"] = "¿Vienes mañana? ¡Qué bien!"
    rows[0]["ca"] = "La novel·la és d'en Pere; la llegiré demà."
    rows[0]["ru"] = "Мое любимое хобби — фотографировать птиц."
    rows[0]["zh"] = "你好，我们走吧！"
    problems = _problems(tmp_path, rows)
    assert not [p for p in problems if p.startswith(rows[0]["sid"])], problems


def test_whitespace_and_normal_form(tmp_path):
    rows = _base_rows()
    rows[0]["it"] = rows[0]["it"] + " "
    rows[1]["fr"] = unicodedata.normalize("NFD", "Le café est très bon.")
    problems = _problems(tmp_path, rows)
    assert "spaces" in _one(problems, f"{rows[0]['sid']} [it]")
    assert "NFC" in _one(problems, f"{rows[1]['sid']} [fr]")


def test_english_word_count_limits(tmp_path):
    rows = _base_rows()
    rows[0]["en"] = "Good morning everyone."
    rows[1]["en"] = "We walked along the quiet river for a very long time before we finally found the bridge."
    rows[2]["en"] = "Good morning to everyone."  # 4 words: fine
    problems = _problems(tmp_path, rows)
    assert _one(problems, rows[0]["sid"], "words") == f"{rows[0]['sid']} [en]: 3 words (allowed 4 to 16)"
    assert _one(problems, rows[1]["sid"], "words") == f"{rows[1]['sid']} [en]: 17 words (allowed 4 to 16)"
    assert not [p for p in problems if p.startswith(rows[2]["sid"])]


def test_duplicates_within_a_language_name_both_sids(tmp_path):
    rows = _base_rows()
    rows[3]["es"] = rows[0]["es"].upper().rstrip(".") + "!"  # same sentence up to case/punctuation
    rows[2]["sv"] = rows[1]["sv"]
    rows[3]["de"] = rows[0]["fr"]  # equal text in *different* languages is no duplicate
    problems = _problems(tmp_path, rows)
    assert _one(problems, "duplicate of", "[es]").startswith(f"{rows[3]['sid']} [es]: duplicate of {rows[0]['sid']}")
    assert _one(problems, "duplicate of", "[sv]").startswith(f"{rows[2]['sid']} [sv]: duplicate of {rows[1]['sid']}")
    assert not [p for p in problems if "duplicate" in p and "[de]" in p]


def test_duplicate_and_malformed_sids(tmp_path):
    rows = _base_rows()
    rows[2]["sid"] = rows[0]["sid"]
    rows[3]["sid"] = "row4"
    problems = _problems(tmp_path, rows)
    assert _one(problems, "duplicate sid") == f"duplicate sid {rows[0]['sid']!r} (rows 1 and 3)"
    assert "malformed sid 'row4'" in _one(problems, "malformed")


def test_split_names_and_sizes(tmp_path):
    rows = _base_rows()
    rows[1]["split"] = "validation"
    problems = _problems(tmp_path, rows)
    assert _one(problems, "unknown split") == (
        f"{rows[1]['sid']}: unknown split 'validation' (expected one of train, dev, test)"
    )
    train = sum(r["split"] == "train" for r in rows)
    assert f"split 'train' has {train} sentences, needs at least 220" in problems
    assert _one(problems, "split 'dev' has").endswith("needs at least 30")
    assert _one(problems, "split 'test' has").endswith("needs at least 50")


def test_every_problem_is_listed_at_once(tmp_path):
    rows = _base_rows()
    rows[0]["pt"] = ""
    rows[1]["ru"] = "Hello there my friend."
    rows[2]["en"] = "Too short."
    path = _write(tmp_path, rows)
    with pytest.raises(CorpusError) as info:
        check_corpus(path)
    msg = str(info.value)
    assert str(path) in msg
    for needle in (f"{rows[0]['sid']} [pt]: empty cell", f"{rows[1]['sid']} [ru]", f"{rows[2]['sid']} [en]: 2 words"):
        assert needle in msg


def test_ragged_lines_and_missing_file(tmp_path):
    rows = _base_rows()
    path = _write(tmp_path, rows)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0]  # drop the zh field of the second tuple
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert "line 3: 13 fields, header has 14" in validate_corpus(path)
    with pytest.raises(CorpusError, match="line 3: 13 fields"):
        load_corpus(path)
    missing = tmp_path / "nope.tsv"
    assert validate_corpus(missing) == [f"{missing}: corpus file not found"]
    with pytest.raises(CorpusError, match="corpus file not found"):
        check_corpus(missing)
    with pytest.raises(CorpusError, match="corpus file not found"):
        sentences(missing, "de", "train")


def test_sentences_reports_an_empty_cell(tmp_path):
    rows = _base_rows()
    for r in rows:
        r["split"] = "test"
    rows[1]["nl"] = ""
    path = _write(tmp_path, rows)
    assert len(sentences(path, "nl", "test", n=1)) == 1  # the empty cell is not among the first one
    with pytest.raises(CorpusError, match=rf"{rows[1]['sid']} \[nl\]: empty cell"):
        sentences(path, "nl", "test")


# --------------------------------------------------------------------------- split assignment


def test_interleaved_splits_counts_and_spread():
    labels = interleaved_splits(320)
    assert Counter(labels) == {"train": 220, "dev": 30, "test": 70}
    assert labels[0] == "train"
    for split, size in (("dev", 30), ("test", 70)):
        pos = [i for i, s in enumerate(labels) if s == split]
        ideal = 320 / size
        assert pos[0] < ideal and pos[-1] > 320 - ideal - 1  # from the start to the end
        for start in range(0, 320 - 64 + 1):  # every stretch of 64 rows holds its share
            assert abs(labels[start : start + 64].count(split) - size * 64 / 320) <= 1
    assert interleaved_splits(320) == labels  # deterministic
    assert Counter(interleaved_splits(5, train=3, dev=1)) == {"train": 3, "dev": 1, "test": 1}
    with pytest.raises(ValueError, match="cannot split 100"):
        interleaved_splits(100)
