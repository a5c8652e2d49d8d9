"""WER / CER / BLEU / chrF on strings whose scores are computed by hand."""

import json

import pytest

from speechmerge.evaluation import metrics as M


def test_wer_deletion_and_insertion_direction():
    # reference has 4 words, hypothesis drops one: 1 deletion / 4 reference words
    assert M.wer(["the cat sat down"], ["the cat sat"], "en") == pytest.approx(25.0)
    # reference has 3 words, hypothesis adds one: 1 insertion / 3 reference words
    assert M.wer(["the cat sat"], ["the cat sat down"], "en") == pytest.approx(100 / 3)


def test_corpus_wer_is_total_edits_over_total_words():
    refs = ["a b c d", "e f"]
    hyps = ["a b c d", "x"]  # utterance 2: 1 substitution + 1 deletion
    # corpus: 2 / 6 words (the mean of utterance WERs would be (0 + 100) / 2 = 50)
    assert M.wer(refs, hyps, "de") == pytest.approx(100 * 2 / 6)
    c = M.error_counts(refs, hyps, "de")
    assert c.edits.tolist() == [0, 2] and c.ref_len.tolist() == [4, 2]


def test_english_normaliser_titles_numbers_contractions():
    ref = "Mr. Smith bought twenty-five apples, didn't he?"
    hyp = "mister smith bought 25 apples did not he"
    assert M.wer([ref], [hyp], "en") == 0.0
    # the same strings under the basic normaliser differ (no number / title handling)
    assert M.wer([ref], [hyp], "de") > 0


def test_basic_normaliser_keeps_diacritics_drops_punctuation_and_case():
    assert M.wer(["¡Hola, Señor!"], ["hola señor"], "es") == 0.0
    assert M.wer(["¡Hola, Señor!"], ["hola senor"], "es") == pytest.approx(50.0)


def test_cer_mandarin_without_spaces():
    # normalised reference = 你好世界 (4 characters); hypothesis misses one
    assert M.cer(["你好，世界。"], ["你好世"], "zh") == pytest.approx(25.0)
    # spaces in the hypothesis are not characters for an unsegmented language
    assert M.cer(["你好，世界。"], ["你 好 世 界"], "zh") == 0.0
    # and WER for zh is on characters too
    assert M.wer(["你好，世界。"], ["你好世"], "zh") == pytest.approx(25.0)
    assert M.primary_error_metric("zh") == "cer" and M.primary_error_metric("de") == "wer"


def test_cer_spaced_language_counts_spaces():
    # reference "ab cd" has 5 characters (space included); the hypothesis lacks the space
    assert M.cer(["ab cd"], ["abcd"], "de") == pytest.approx(20.0)


def test_per_utterance_languages():
    c = M.error_counts(["Mr. Smith", "¡Hola, Señor!"], ["mister smith", "hola senor"], ["en", "es"])
    assert c.edits.tolist() == [0, 1] and c.ref_len.tolist() == [2, 2]


def test_empty_reference_names_the_utterance():
    with pytest.raises(ValueError, match="'utt-7'.*empty reference"):
        M.wer(["a b", "  "], ["a b", "c"], "de", ids=["utt-1", "utt-7"])
    with pytest.raises(ValueError, match="'utt-9'.*empty after normalisation"):
        M.wer(["Hmm."], ["x"], "en", ids=["utt-9"])
    with pytest.raises(ValueError, match="'s2'.*empty reference"):
        M.bleu(["a", ""], ["a", "b"], ids=["s1", "s2"])


def test_length_mismatch():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        M.wer(["a", "b"], ["a"], "de")


def test_bleu_hand_computed():
    # precisions 5/6, 3/5, 2/4, 1/3, equal lengths (BP = 1): BLEU = (1/12) ** (1/4)
    score, sig = M.bleu(["the cat sat on a mat"], ["the cat sat on the mat"])
    assert score == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-6)
    assert "tok:13a" in sig and "nrefs:1" in sig
    assert M.bleu(["a b c d e"], ["a b c d e"])[0] == pytest.approx(100.0)
    assert M.bleu(["a b c d"], ["e f g h"])[0] == 0.0


def test_chrf_hand_computed():
    # char 1-grams: P = R = 1/2; 2-grams: no match; longer orders absent -> mean F = 0.25
    score, sig = M.chrf(["ac"], ["ab"])
    assert score == pytest.approx(25.0)
    assert "nc:6" in sig
    assert M.chrf(["hello world"], ["hello world"])[0] == pytest.approx(100.0)


@pytest.mark.parametrize("which", ["bleu", "chrf"])
def test_sentence_stats_sum_to_corpus_score(which):
    refs = ["the cat sat on a mat", "hello there world", "a b c d e f"]
    hyps = ["the cat sat on the mat", "hello world", "a b x d e"]
    metric = M.bleu_metric("en") if which == "bleu" else M.chrf_metric()
    st = M.sentence_stats(metric, refs, hyps)
    assert st.shape[0] == 3
    corpus = M.bleu(refs, hyps)[0] if which == "bleu" else M.chrf(refs, hyps)[0]
    assert M.score_from_stats(metric, st.sum(axis=0)) == pytest.approx(corpus)


def test_score_texts_keys():
    out = M.score_texts(["a b"], ["a c"], task="transcribe", language="de")
    assert set(out["metrics"]) == {"wer", "cer"} and out["metrics"]["wer"] == pytest.approx(50.0)
    out = M.score_texts(["a b"], ["a b"], task="translate", language="de")
    assert set(out["metrics"]) == {"bleu", "chrf"} and "bleu_signature" in out["info"]
    with pytest.raises(ValueError, match="unknown task"):
        M.score_texts(["a"], ["a"], task="summarise", language="de")


def test_spelling_map_from_model_dir(tmp_path):
    # without a map "colour" and "color" differ; with the tokenizer's normalizer.json they match
    assert M.wer(["colour"], ["color"], "en") == 100.0
    (tmp_path / "normalizer.json").write_text(json.dumps({"colour": "color"}))
    assert M.wer(["colour"], ["color"], "en", spelling_source=tmp_path) == 0.0
    assert "normalizer.json" in M.describe_normalizer("en", spelling_source=tmp_path)


def test_base_language():
    assert M.base_language("lang_PT") == "pt" and M.base_language("pt-BR") == "pt"
