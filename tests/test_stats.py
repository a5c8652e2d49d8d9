"""Bootstrap intervals and paired significance tests."""

import numpy as np
import pytest

from speechmerge.evaluation import stats as S
from speechmerge.evaluation.decode import read_hypotheses, write_hypotheses

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()


def make_records(n, error_every, model="m", seed=0, task="transcribe"):
    """n utterances of 5 words; every ``error_every``-th hypothesis has one substituted word."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        ref = " ".join(rng.choice(WORDS, 5))
        hyp = ref.split()
        if error_every and i % error_every == 0:
            hyp[2] = "wrong"
        recs.append(
            {
                "id": f"u{i:04d}",
                "language": "de",
                "task": task,
                "reference": ref,
                "hypothesis": " ".join(hyp),
                "model": model,
            }
        )
    return recs


def test_resampled_sums_match_explicit_indices():
    stats = np.arange(14).reshape(7, 2)
    sums = np.concatenate(list(S._resampled_sums(stats, 5, seed=3)))
    idx = np.random.default_rng(3).integers(0, 7, size=(5, 7))
    np.testing.assert_allclose(sums, stats[idx].sum(axis=1))


def test_bootstrap_ci_contains_estimate_and_shrinks():
    small = S.corpus_stats(make_records(40, 3), "wer")
    big = S.corpus_stats(make_records(400, 3), "wer")
    for cs in (small, big):
        lo, hi = S.bootstrap_ci(cs, n_boot=500, seed=1)
        assert lo <= cs.score() <= hi
    w_small = np.subtract(*S.bootstrap_ci(small, n_boot=500, seed=1)[::-1])
    w_big = np.subtract(*S.bootstrap_ci(big, n_boot=500, seed=1)[::-1])
    assert 0 < w_big < w_small


def test_bootstrap_is_seeded():
    cs = S.corpus_stats(make_records(50, 4), "cer")
    assert S.bootstrap_ci(cs, n_boot=200, seed=5) == S.bootstrap_ci(cs, n_boot=200, seed=5)
    assert S.bootstrap_ci(cs, n_boot=200, seed=5) != S.bootstrap_ci(cs, n_boot=200, seed=6)


def test_wer_point_estimate():
    cs = S.corpus_stats(make_records(30, 3), "wer")  # 10 of 30 utterances with 1 error in 5 words
    assert cs.score() == pytest.approx(100 * 10 / 150)


def test_bleu_bootstrap():
    perfect = S.corpus_stats(make_records(30, 0), "bleu")
    assert perfect.score() == pytest.approx(100.0)
    assert S.bootstrap_ci(perfect, n_boot=100) == pytest.approx((100.0, 100.0))
    noisy = S.corpus_stats(make_records(60, 2), "bleu")
    lo, hi = S.bootstrap_ci(noisy, n_boot=200)
    assert lo <= noisy.score() <= hi and hi - lo > 0


def test_paired_bootstrap_detects_clear_difference():
    good, bad = make_records(200, 0, "good"), make_records(200, 2, "bad")
    a, b = S.check_paired(good, bad, what_a="good", what_b="bad")
    for metric in ("wer", "bleu"):
        res = S.paired_bootstrap(S.corpus_stats(a, metric), S.corpus_stats(b, metric), n_boot=500)
        assert res["delta"] > 0  # A better, whichever direction the metric goes
        assert res["p_value"] < 0.01 and res["p_koehn"] < 0.01
        assert res["delta_ci"][0] > 0


def test_paired_bootstrap_identical_systems():
    recs = make_records(100, 3)
    cs = S.corpus_stats(recs, "wer")
    res = S.paired_bootstrap(cs, cs, n_boot=300)
    assert res["delta"] == 0.0 and res["p_value"] == 1.0


def test_matched_pairs():
    good, bad = make_records(200, 0, "good"), make_records(200, 2, "bad")
    res = S.matched_pairs_test(S.corpus_stats(good, "wer"), S.corpus_stats(bad, "wer"))
    assert res["mean_diff"] == pytest.approx(0.5) and res["p_value"] < 1e-6
    same = S.corpus_stats(bad, "wer")
    assert S.matched_pairs_test(same, same)["p_value"] == 1.0
    # slightly better in a few utterances only: not significant
    nearly = [dict(r) for r in bad]
    nearly[0]["hypothesis"] = nearly[0]["reference"]
    res = S.matched_pairs_test(S.corpus_stats(nearly, "wer"), same)
    assert 0.05 < res["p_value"] < 1.0


def test_check_paired_errors():
    a = make_records(10, 2)
    with pytest.raises(S.HypothesesMismatch, match="different utterances"):
        S.check_paired(a, a[:-1])
    b = [dict(r) for r in a]
    b[3]["reference"] = "something else"
    with pytest.raises(S.HypothesesMismatch, match="u0003.*reference differs"):
        S.check_paired(a, b)
    shuffled = list(reversed(a))
    x, y = S.check_paired(a, shuffled)
    assert [r["id"] for r in y] == [r["id"] for r in x]
    with pytest.raises(S.HypothesesMismatch, match="not aligned"):
        S.paired_bootstrap(S.corpus_stats(a, "wer"), S.corpus_stats(shuffled, "wer"))


def test_read_hypotheses_checks_model(tmp_path):
    p = tmp_path / "h.jsonl"
    write_hypotheses(make_records(5, 2, model="joint"), p)
    assert len(read_hypotheses(p, expect_model="joint", expect_task="transcribe")) == 5
    with pytest.raises(ValueError, match="from model 'joint', expected 'merge-ties'"):
        read_hypotheses(p, expect_model="merge-ties")
    mixed = make_records(3, 0, model="a") + make_records(3, 0, model="b")
    write_hypotheses(mixed, p)
    with pytest.raises(ValueError, match="several models"):
        read_hypotheses(p)
    p.write_text('{"id": "x"}\n')
    with pytest.raises(ValueError, match=r"h.jsonl:1: record lacks"):
        read_hypotheses(p)


def test_stratified_mean_bootstrap():
    sets = [S.corpus_stats(make_records(60, e, seed=j), "wer") for j, e in enumerate((2, 3, 5))]
    reps = S.bootstrap_mean_scores(sets, n_boot=300, seed=0)
    mean = np.mean([cs.score() for cs in sets])
    lo, hi = S.percentile_interval(reps)
    assert lo <= mean <= hi
    # the mean of three sets is less variable than one set of the same size
    one = S.bootstrap_scores(sets[0], n_boot=300, seed=0)
    assert reps.std() < one.std()
    good = [S.corpus_stats(make_records(60, 0, seed=j), "wer") for j in range(3)]
    res = S.paired_bootstrap_mean(good, sets, n_boot=300)
    assert res["score_a"] == 0.0 and res["score_b"] == pytest.approx(mean)
    assert res["delta"] == pytest.approx(mean) and res["p_value"] < 0.01 and res["n_sets"] == 3
