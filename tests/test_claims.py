"""The claims tables: verdict rules on hand-made numbers, and claims evaluated end to end on
hand-made hypotheses where one model is clearly better, clearly worse or identical."""

import csv
import json
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from speechmerge.evaluation.decode import write_hypotheses
from speechmerge.evaluation.metrics import score_texts
from speechmerge.evaluation.stats import paired_bootstrap_scores, stratum_seed
from speechmerge.report import claims as CL
from speechmerge.report import write_report
from speechmerge.report.scores import ResultStore

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
HANZI = "一二三四五六七八九十"
N_UTT = 20  # 5 words (characters) each: an error rate of k % = k substituted tokens


# ----- verdict rules on hand-made numbers ------------------------------------------------------
@pytest.mark.parametrize(
    "test, ci, margin, expected",
    [
        ("superiority", (0.5, 3.0), None, "reproduced"),
        ("superiority", (-3.0, -0.1), None, "contradicted"),
        ("superiority", (-1.0, 2.0), None, "inconclusive"),
        ("superiority", (0.0, 0.0), None, "inconclusive"),
        ("correlation", (0.2, 0.9), None, "reproduced"),
        ("correlation", (-0.9, -0.2), None, "contradicted"),
        ("correlation", (-0.2, 0.9), None, "inconclusive"),
        ("noninferiority", (-9.0, 4.0), 10.0, "reproduced"),  # worse by at most 9 < 10
        ("noninferiority", (-25.0, -11.0), 10.0, "contradicted"),  # worse by more than the margin
        ("noninferiority", (-12.0, 3.0), 10.0, "inconclusive"),
        ("equivalence", (-9.0, 9.0), 10.0, "reproduced"),
        ("equivalence", (12.0, 30.0), 10.0, "contradicted"),  # wholly above +m
        ("equivalence", (-30.0, -10.0), 10.0, "contradicted"),  # wholly at or below −m
        ("equivalence", (-5.0, 15.0), 10.0, "inconclusive"),
        ("equivalence", (-15.0, 15.0), 10.0, "inconclusive"),
        ("threshold", (21.0, 60.0), 20.0, "reproduced"),
        ("threshold", (-5.0, 19.0), 20.0, "contradicted"),
        ("threshold", (10.0, 30.0), 20.0, "inconclusive"),
        ("superiority", None, None, "inconclusive"),
        ("superiority", (math.nan, 1.0), None, "inconclusive"),
    ],
)
def test_verdict_rules(test, ci, margin, expected):
    assert CL.verdict(test, ci, margin=margin) == expected


def test_verdict_at_most_and_bad_input():
    assert CL.verdict("at_most", None, margin=0.1, value=0.02) == "reproduced"
    assert CL.verdict("at_most", None, margin=0.1, value=0.1) == "reproduced"
    assert CL.verdict("at_most", None, margin=0.1, value=0.5) == "contradicted"
    assert CL.verdict("at_most", None, margin=0.1, value=math.nan) == "inconclusive"
    with pytest.raises(ValueError, match="unknown test 'better'"):
        CL.verdict("better", (0, 1))
    with pytest.raises(ValueError, match="needs a margin"):
        CL.verdict("noninferiority", (0, 1))


def test_bootstrap_p_hand_numbers():
    reps = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])  # mean 0: centred = reps
    # two-sided, H0 effect = 0: #{|d| >= 1.5} = 2 -> (1 + 2) / 6
    assert CL.bootstrap_p("superiority", 1.5, reps) == pytest.approx(3 / 6)
    # non-inferiority margin 1, H0 effect <= -1: #{d >= 1.5 + 1} = 0 -> 1 / 6
    assert CL.bootstrap_p("noninferiority", 1.5, reps, margin=1.0) == pytest.approx(1 / 6)
    # threshold 1: #{d >= 1.5 - 1} = 2 -> 3 / 6
    assert CL.bootstrap_p("threshold", 1.5, reps, margin=1.0) == pytest.approx(3 / 6)
    # equivalence margin 3 around 0.5: lower #{d >= 3.5} = 0, upper #{d <= -2.5} = 0 -> 1/6;
    # around 1.5: upper #{d <= -1.5} = 1 -> 2/6
    assert CL.bootstrap_p("equivalence", 0.5, reps, margin=3.0) == pytest.approx(1 / 6)
    assert CL.bootstrap_p("equivalence", 1.5, reps, margin=3.0) == pytest.approx(2 / 6)


# ----- hand-made hypotheses --------------------------------------------------------------------
def records(model, testset, language, errors, *, chars=False, seed=0):
    """N_UTT utterances of 5 tokens; ``errors`` tokens substituted, spread over the utterances
    (error rate = errors %); the same references for every model of a test set."""
    rng = np.random.default_rng(seed + sum(map(ord, testset)))
    out = []
    for i in range(N_UTT):
        ref = list(rng.choice(list(HANZI) if chars else WORDS, 5))
        k = errors // N_UTT + (1 if i < errors % N_UTT else 0)
        hyp = ["错" if chars else "wrong"] * k + ref[k:]
        sep = "" if chars else " "
        out.append(
            {
                "id": f"{testset}-{i}",
                "language": language,
                "task": "transcribe",
                "reference": sep.join(ref),
                "hypothesis": sep.join(hyp),
                "model": model,
                "testset": testset,
            }
        )
    return out


def make_store(values, language_of, *, chars=False, n_boot=200, metric_override=None):
    """values: {model: {testset: error %}} -> (score records, hypotheses) and a ResultStore."""
    scores, hyps = [], {}
    for model, per in values.items():
        for testset, err in per.items():
            recs = records(model, testset, language_of(testset), err, chars=chars)
            scored = score_texts(
                [r["reference"] for r in recs],
                [r["hypothesis"] for r in recs],
                task="transcribe",
                language=language_of(testset),
                ids=[r["id"] for r in recs],
            )
            scores.append(
                {
                    "model": model,
                    "testset": testset,
                    "language": language_of(testset),
                    "task": "transcribe",
                    "n": N_UTT,
                    "metrics": scored["metrics"],
                }
            )
            hyps[(model, testset)] = recs
    return scores, hyps, ResultStore(scores, hyps, n_boot=n_boot, seed=3, metric_override=metric_override)


def by_id(results):
    return {r.id: r for r in results}


ML_ROWS = [
    {"model": "zeroshot", "label": "Zero-shot", "group": "baseline"},
    {
        "model": "experts",
        "label": "Individual experts",
        "group": "baseline",
        "per_subset": {"de": "e-de", "es": "e-es"},
    },
    {"model": "joint", "label": "Multi-lingual multi-task", "group": "baseline"},
    {"model": "seq-2", "label": "Sequential", "group": "baseline"},
    {"model": "merge-task_arithmetic", "label": "Task Arithmetic", "group": "merge", "method": "task_arithmetic"},
    {"model": "merge-ties", "label": "TIES", "group": "merge", "method": "ties"},
    {"model": "merge-lors", "label": "LoRS-Merging", "group": "merge", "method": "lors"},
    {"model": "merge-lors_sparse", "label": "LoRS sparse only", "group": "merge", "method": "lors_sparse"},
]


def ml_spec(rows=ML_ROWS):
    return {
        "experiment": "multilingual",
        "kind": "multilingual",
        "subsets": ["de", "es"],
        "tasks": ["transcribe"],
        "rows": rows,
        "normalise_to": "experts",
        "sweeps": [],
        "sequential": [],
        "ood_subsets": [],
        "retention_subsets": [],
        "peft_cross_subsets": [],
    }


def ml_values(lors=10):
    """Experts 10 %; LoRS ``lors``; multi-task 60 % (clearly worse than LoRS); sequential the same
    as LoRS (identical hypotheses); TIES 2 % (clearly better than LoRS); TA 11 %."""
    same = {"de-transcribe": lors, "es-transcribe": lors}
    return {
        "zeroshot": {"de-transcribe": 80, "es-transcribe": 80},
        "e-de": {"de-transcribe": 10},
        "e-es": {"es-transcribe": 10},
        "joint": {"de-transcribe": 60, "es-transcribe": 60},
        "seq-2": same,
        "merge-task_arithmetic": {"de-transcribe": 11, "es-transcribe": 11},
        "merge-ties": {"de-transcribe": 2, "es-transcribe": 2},
        "merge-lors": same,
        "merge-lors_sparse": {"de-transcribe": 50, "es-transcribe": 50},
    }


def lang_of(testset):
    return testset.split("-")[0]


def test_multilingual_claims_end_to_end():
    _, _, store = make_store(ml_values(), lang_of)
    res = by_id(CL.evaluate_claims(ml_spec(), store))
    assert list(res) == [
        "lors-vs-joint",
        "lors-vs-sequential",
        "lors-vs-task_arithmetic",
        "lors-vs-ties",
        "lors-np-20pct",
    ]  # one claim per other merge; LoRS's own halves are not compared
    # NP (experts = 100): LoRS 100, multi-task 100 * 40 / 90
    joint = res["lors-vs-joint"]
    assert joint.effect == pytest.approx(100 - 100 * 40 / 90)
    assert joint.ci_lo > 0 and joint.p_value < 0.05 and joint.verdict == "reproduced"
    assert joint.n == 2 * N_UTT and joint.n_unit == "utterances"
    assert "test-sample variance only" in joint.note
    # sequential gives LoRS's very hypotheses: every replicate's effect is 0
    seq = res["lors-vs-sequential"]
    assert seq.effect == 0 and (seq.ci_lo, seq.ci_hi) == (0, 0) and seq.verdict == "inconclusive"
    assert res["lors-vs-ties"].verdict == "contradicted" and res["lors-vs-ties"].ci_hi < 0
    assert "TIES merging of the same experts" in res["lors-vs-ties"].claim
    # relative NP gain over multi-task: 100 * (100 - 44.4) / 44.4 = 125 % > 20 %
    pct = res["lors-np-20pct"]
    assert pct.effect == pytest.approx(100 * (90 / 40 - 1))
    assert pct.ci_lo > 20 and pct.verdict == "reproduced"
    assert "does not say relative to what" in pct.note


def test_claims_are_deterministic_and_paired():
    _, _, s1 = make_store(ml_values(), lang_of, n_boot=100)
    _, _, s2 = make_store(ml_values(), lang_of, n_boot=100)
    a = [r.as_dict() for r in CL.evaluate_claims(ml_spec(), s1)]
    b = [r.as_dict() for r in CL.evaluate_claims(ml_spec(), s2)]
    assert a == b
    c = [r.as_dict() for r in CL.evaluate_claims(ml_spec(), s1, seed=11)]
    assert c != a  # another seed, other resamples


def test_paired_bootstrap_scores_resamples_the_same_utterances():
    from speechmerge.evaluation.stats import corpus_stats, paired_bootstrap

    a = corpus_stats(records("a", "de-transcribe", "de", 10), "wer")
    b = corpus_stats(records("b", "de-transcribe", "de", 30), "wer")
    scores = paired_bootstrap_scores([a, b], n_boot=50, seed=stratum_seed(5, 0))
    assert scores.shape == (50, 2)
    pb = paired_bootstrap(a, b, n_boot=50, seed=5)  # the pairwise test draws the same resamples
    assert np.quantile(scores[:, 1] - scores[:, 0], 0.025) == pytest.approx(pb["delta_ci"][0])


def test_missing_rows_are_not_run():
    rows = [r for r in ML_ROWS if r["model"] not in ("joint", "seq-2", "merge-ties", "merge-task_arithmetic")]
    _, _, store = make_store(ml_values(), lang_of)
    res = by_id(CL.evaluate_claims(ml_spec(rows), store))
    assert res["lors-vs-joint"].verdict == "not run"
    assert "no joint row in the config" in res["lors-vs-joint"].note
    assert res["lors-vs-sequential"].verdict == "not run" and "Sequential" in res["lors-vs-sequential"].note
    assert res["lors-vs-other-merges"].verdict == "not run" and "other than" in res["lors-vs-other-merges"].note
    assert math.isnan(res["lors-np-20pct"].effect) and res["lors-np-20pct"].verdict == "not run"
    # no LoRS row at all: every claim not run
    no_lors = [r for r in ML_ROWS if r.get("method") != "lors"]
    for r in CL.evaluate_claims(ml_spec(no_lors), store):
        assert r.verdict == "not run" and "lors" in r.note, r


def test_missing_scores_are_not_run():
    vals = ml_values()
    del vals["joint"]
    _, _, store = make_store(vals, lang_of)
    res = by_id(CL.evaluate_claims(ml_spec(), store))
    assert res["lors-vs-joint"].verdict == "not run"
    assert "scores missing: joint on de-transcribe" in res["lors-vs-joint"].note


def test_without_hypotheses_inconclusive():
    scores, _, _ = make_store(ml_values(), lang_of)
    res = by_id(CL.evaluate_claims(ml_spec(), ResultStore(scores, {}, n_boot=50)))
    joint = res["lors-vs-joint"]
    assert joint.effect == pytest.approx(100 - 100 * 40 / 90)
    assert joint.verdict == "inconclusive" and "no CI" in joint.note


# ----- domains ---------------------------------------------------------------------------------
DOM_ROWS = [
    {"model": "zeroshot", "label": "Zero-shot", "group": "baseline"},
    {"model": "joint", "label": "Full-FT (all domains)", "group": "baseline"},
    {"model": "merge-soup", "label": "SOUP", "group": "merge", "method": "soup"},
    {"model": "merge-ties", "label": "TIES", "group": "merge", "method": "ties"},
    {"model": "merge-tsv_m", "label": "TSV-M", "group": "merge", "method": "tsv_m"},
    {"model": "merge-boosted_tsv_m", "label": "BoostedTSV-M", "group": "merge", "method": "boosted_tsv_m"},
]
DOM_SPEC = {
    "experiment": "domains",
    "kind": "domains",
    "subsets": ["clean", "noisy"],
    "tasks": ["transcribe"],
    "rows": DOM_ROWS,
    "normalise_to": "experts",
    "sweeps": [],
    "sequential": [],
    "ood_subsets": ["farfield"],
    "retention_subsets": ["lang_en"],
    "peft_cross_subsets": [],
}


def dom_lang(testset):
    return "en" if testset.startswith("lang_en") else "pt"


def test_domains_claims_end_to_end():
    def row(i, o, en):
        return {"clean-transcribe": i, "noisy-transcribe": i, "farfield-transcribe": o, "lang_en-transcribe": en}

    values = {
        "zeroshot": row(60, 70, 10),
        "joint": row(20, 30, 40),
        "merge-soup": row(40, 50, 8),  # best English
        "merge-ties": row(25, 35, 45),  # English far worse than zero-shot
        "merge-tsv_m": row(20, 30, 30),  # the same in-domain as BoostedTSV-M
        "merge-boosted_tsv_m": row(20, 60, 30),  # Full-FT in-domain, much worse out of domain
    }
    _, _, store = make_store(values, dom_lang)
    res = by_id(CL.evaluate_claims(DOM_SPEC, store))
    assert set(res) == {
        "boosted-vs-tsvm",
        "boosted-matches-fullft-id",
        "boosted-keeps-ood",
        "parameter-space-keeps-english",
        "ties-hurts-english",
    }
    assert res["boosted-vs-tsvm"].verdict == "inconclusive" and res["boosted-vs-tsvm"].effect == 0
    # identical in-domain errors: 0 % worse, inside the 10 % non-inferiority margin
    ni = res["boosted-matches-fullft-id"]
    assert ni.effect == 0 and ni.verdict == "reproduced" and ni.margin == 10 and ni.p_value < 0.05
    # out of domain: 60 % against 30 % = 100 % worse than Full-FT
    ood = res["boosted-keeps-ood"]
    assert ood.effect == pytest.approx(-100) and ood.verdict == "contradicted"
    en = res["parameter-space-keeps-english"]
    assert en.effect == pytest.approx(30 - 8) and en.verdict == "reproduced"
    assert en.comparison.startswith("SOUP vs TSV-M")  # TSV-M and BoostedTSV-M tie at 30: the first
    ties = res["ties-hurts-english"]
    assert ties.effect == pytest.approx(45 - 10) and ties.verdict == "reproduced"


# ----- peft ------------------------------------------------------------------------------------
PEFT_ROWS = [
    {"model": "zeroshot", "label": "Zero-shot", "group": "baseline"},
    {"model": "adalora", "label": "AdaLoRA", "group": "peft", "method": "adalora"},
    {"model": "s2lora", "label": "S2-LoRA", "group": "peft", "method": "s2lora"},
]
PEFT_SPEC = {
    "experiment": "peft",
    "kind": "peft",
    "subsets": ["child"],
    "tasks": ["transcribe"],
    "rows": PEFT_ROWS,
    "normalise_to": None,
    "sweeps": [],
    "sequential": [],
    "ood_subsets": [],
    "retention_subsets": [],
    "peft_cross_subsets": ["adult"],
}


def ranks(values, prefix=""):
    mods = [f"{prefix}model.{side}.layers.{i}.self_attn.q_proj" for side in ("encoder", "decoder") for i in range(3)]
    return dict(zip(mods, values))


def test_peft_claims_end_to_end():
    values = {
        "zeroshot": {"child-transcribe": 50, "adult-transcribe": 30},
        "adalora": {"child-transcribe": 20, "adult-transcribe": 40},
        "s2lora": {"child-transcribe": 20, "adult-transcribe": 10},
    }
    _, _, store = make_store(values, lambda t: "zh", chars=True, metric_override="cer")
    params = {
        "adalora": {"trainable_params": 100_000, "trainable_percent": 0.5},
        "s2lora": {"trainable_params": 4_000, "trainable_percent": 0.02},
    }
    allocs = {
        "adalora": ranks([5, 4, 3, 1, 0, 2], prefix="base_model.model."),  # peft's names
        "s2lora": ranks([8, 6, 5, 2, 1, 3]),  # the same order
    }
    res = by_id(CL.evaluate_claims(PEFT_SPEC, store, params=params, rank_allocations=allocs))
    eq = res["s2lora-matches-adalora-id"]
    assert eq.metric.startswith("in-domain mean CER")
    assert eq.effect == 0 and eq.verdict == "reproduced"
    cross = res["s2lora-cross-domain"]
    assert cross.effect == pytest.approx(30) and cross.verdict == "reproduced"
    p = res["s2lora-fewer-params"]
    assert p.effect == pytest.approx(0.04) and p.verdict == "reproduced" and p.n is None
    assert "0.02 %" in p.note
    rk = res["s2lora-rank-allocation"]
    assert rk.effect == pytest.approx(1.0) and rk.n == 6 and rk.n_unit == "modules"
    assert rk.p_value < 0.05 and rk.verdict == "reproduced"
    # without the train_info / rank files: not run, saying what is missing
    res = by_id(CL.evaluate_claims(PEFT_SPEC, store))
    assert res["s2lora-fewer-params"].verdict == "not run" and "train_info" in res["s2lora-fewer-params"].note
    assert res["s2lora-rank-allocation"].verdict == "not run"
    assert "no rank allocation of s2lora and adalora" in res["s2lora-rank-allocation"].note


def test_spearman_hand_pair():
    x, y = [1, 2, 3, 4, 5], [5, 6, 7, 8, 7]
    # ranks of y with ties averaged: 1, 2, 3.5, 5, 3.5 -> rho = 8 / sqrt(10 * 9.5)
    out = CL.spearman_test(x, y, n_boot=500, seed=0)
    assert out["rho"] == pytest.approx(8 / math.sqrt(95)) == pytest.approx(spearmanr(x, y).statistic)
    assert 0 < out["p_value"] <= 1 and out["ci"][0] <= out["rho"] <= out["ci"][1]
    # a perfect inverse order of 8 modules: rho = -1, a permutation reaches |rho| = 1 with p 2/8!
    inv = CL.spearman_test(range(8), range(8, 0, -1), n_boot=400, seed=1)
    assert inv["rho"] == pytest.approx(-1) and inv["p_value"] < 0.01
    assert CL.verdict("correlation", inv["ci"]) == "contradicted"
    flat = CL.spearman_test([1, 2, 3], [2, 2, 2])
    assert math.isnan(flat["rho"]) and "same rank" in flat["note"]
    with pytest.raises(ValueError, match="same length"):
        CL.spearman_test([1, 2, 3], [1, 2])


def test_aligned_ranks_match_module_names():
    a = ranks([1, 2, 3, 4, 5, 6], prefix="base_model.model.")
    b = ranks([6, 5, 4, 3, 2, 1])
    del b["model.decoder.layers.2.self_attn.q_proj"]
    x, y = CL.aligned_ranks(a, b)
    assert len(x) == 5 and list(x + y) == [7] * 5


# ----- the report ------------------------------------------------------------------------------
def test_write_report_writes_the_claims(tmp_path):
    scores, hyps, _ = make_store(ml_values(), lang_of)
    score_files, hyp_files = [], []
    for model in ml_values():
        recs = [r for r in scores if r["model"] == model]
        (tmp_path / f"{model}.json").write_text(json.dumps({"model": model, "results": recs}))
        write_hypotheses([h for (m, _), hs in hyps.items() if m == model for h in hs], tmp_path / f"{model}.jsonl")
        score_files.append(tmp_path / f"{model}.json")
        hyp_files.append(tmp_path / f"{model}.jsonl")
    out = tmp_path / "report"
    summary = write_report(ml_spec(), out, scores=score_files, hyps=hyp_files, n_boot=50, seed=2)
    rows = list(csv.DictReader(open(out / "claims.csv")))
    assert [r["id"] for r in rows] == [c["id"] for c in summary["claims"]]
    assert rows[0]["verdict"] == "reproduced" and rows[0]["arxiv"] == "2502.17380"
    assert {"claims.csv", "claims.md"} <= {f["file"] for f in summary["files"]}
    readme = (out / "README.md").read_text()
    assert "## Claims" in readme and "**reproduced**" in readme and "`claims.csv`" in readme
    assert "| Claim | Verdict |" in (out / "claims.md").read_text()


def test_np_undefined_when_the_experts_get_nothing_right():
    vals = ml_values()
    vals["e-de"], vals["e-es"] = {"de-transcribe": 100}, {"es-transcribe": 100}
    _, _, store = make_store(vals, lang_of, n_boot=50)
    res = by_id(CL.evaluate_claims(ml_spec(), store))
    joint = res["lors-vs-joint"]
    assert joint.verdict == "inconclusive" and math.isnan(joint.effect)
    assert "reference row's accuracy is 0" in joint.note
    assert joint.comparison == "LoRS-Merging vs Multi-lingual multi-task"


def test_docs_claims_md_is_generated_from_the_kinds_claims():
    """docs/claims.md is written by speechmerge.report.claims_doc from every kind's ClaimDefs."""
    from speechmerge.config import ROOT
    from speechmerge.experiments import all_kinds
    from speechmerge.report.claims_doc import render

    text = render()
    assert (ROOT / "docs" / "claims.md").read_text() == text, "run: python -m speechmerge.report.claims_doc"
    for kind in all_kinds():
        for claim in kind.claims:
            assert f"`{claim.doc_id or claim.id}`" in text
