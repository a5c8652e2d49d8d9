"""Several training seeds: names, the plan (every trained model and merge once per seed), the
two-level bootstrap over seeds and utterances, and a report of hand-made per-seed results."""

import csv
import io
import json
import math

import numpy as np
import pytest

from speechmerge import names as N
from speechmerge.config import ROOT, ConfigError, load_config, validate_config
from speechmerge.evaluation import stats as S
from speechmerge.evaluation.decode import write_hypotheses
from speechmerge.plan import build_plan
from speechmerge.report import write_report

# ----- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["expert-de", "joint", "seq-3", "s2lora", "ties", "ties@scaling=0.5", "merge-lors"])
def test_seeded_names_round_trip(name):
    for seed in (0, 1, 12):
        assert N.parse_seeded(N.seeded(name, seed)) == (name, seed)
    assert N.seeded(name, None) == name
    assert N.parse_seeded(name) == (name, None)


def test_seeded_variant_and_model_names():
    variant = N.seeded(N.variant("ties", "scaling", 0.50), 1)
    assert variant == "ties@scaling=0.5~s1"
    assert N.parse_variant(variant) == ("ties", "scaling", "0.5")
    assert N.merge_model(variant) == N.seeded(N.merge_model("ties@scaling=0.5"), 1) == "merge-ties@scaling=0.5~s1"
    assert N.merge_variant("merge-ties~s2") == "ties~s2"
    with pytest.raises(ValueError, match="already carries a seed"):
        N.seeded("joint~s1", 2)
    with pytest.raises(ValueError, match="integer seed"):
        N.parse_seeded("joint~sx")


# ----- plan ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke():
    return load_config(ROOT / "config.yaml", ROOT / "presets" / "smoke.yaml")


def with_seeds(config, seeds):
    return {**config, "seeds": seeds}


def test_plan_trains_merges_and_evaluates_once_per_seed(smoke):
    one, three = build_plan(smoke), build_plan(with_seeds(smoke, [0, 1, 2]))
    assert three.datasets == one.datasets  # the data is the same for every training seed
    trained = [j for (e, j) in one.jobs if e != N.ADAPTATION]
    assert len(trained) > 0
    for job in trained:
        for seed in (0, 1, 2):
            spec = three.jobs[
                (one.jobs[(next(e for e, jj in one.jobs if jj == job), job)]["experiment"], f"{job}~s{seed}")
            ]
            assert spec["seed"] == seed
            init = one.jobs[(spec["experiment"], job)]["init"]
            assert spec["init"] == (None if init is None else f"{init}~s{seed}")
    assert len(three.jobs) == 3 * len(trained) + (len(one.jobs) - len(trained))
    assert len(three.variants) == 3 * len(one.variants)
    for (exp, variant), spec in three.variants.items():
        base, seed = N.parse_seeded(variant)
        assert spec["seed"] == seed and spec["variant"] == variant
        assert spec["experts"] == three.seed_experts[exp][seed]  # the experts of the merge's own seed
        assert spec["hparams"] == one.variants[(exp, base)]["hparams"]
    start = set(N.START_MODELS)
    for exp in one.experiments:
        ev1 = [(m, t) for e, m, t in one.evaluations if e == exp]
        ev3 = [(m, t) for e, m, t in three.evaluations if e == exp]
        assert [x for x in ev3 if x[0] in start] == [x for x in ev1 if x[0] in start]  # once
        seeded = sorted((N.parse_seeded(m)[0], t) for m, t in ev3 if m not in start)
        assert seeded == sorted(x for x in ev1 if x[0] not in start for _ in range(3))
        assert three.reports[exp].seeds == [0, 1, 2]
        assert three.experts[exp] == three.seed_experts[exp][0]


def test_report_rows_name_their_seeds(smoke):
    plan = build_plan(with_seeds(smoke, [3, 5]))
    spec = plan.report_spec("multilingual")
    rows = {r["model"]: r for r in spec["rows"]}
    assert "seeds" not in rows[N.ZEROSHOT]
    assert rows[N.JOINT]["seeds"] == {3: "joint~s3", 5: "joint~s5"}
    experts = rows["experts"]["seeds"]
    assert set(experts) == {3, 5} and all(m.endswith("~s5") for m in experts[5]["per_testset"].values())
    assert spec["baseline_for_significance"] == N.JOINT
    for sweep in spec["sweeps"]:
        for p in sweep["points"]:
            assert p["seeds"] == {s: N.seeded(p["model"], s) for s in (3, 5)}


def test_one_seed_plan_is_the_plan_without_seeds(smoke):
    plain, listed = build_plan(smoke), build_plan(with_seeds(smoke, [smoke.get("seed", 0)]))
    assert plain.jobs == listed.jobs and plain.variants == listed.variants
    assert plain.evaluations == listed.evaluations and plain.reports == listed.reports


def test_config_keys_of_seeded_jobs(smoke):
    from speechmerge.plan.checks import _job_key, _variant_key

    plan = build_plan(with_seeds(smoke, [0, 1]))
    assert _job_key(plan, "multilingual", "joint~s1", "full") == "experiments.multilingual.joint.train"
    assert _job_key(plan, "multilingual", "seq-2~s0", "full") == "experiments.multilingual.sequential.train"
    ties = plan.variants[("multilingual", "ties~s1")]
    assert _variant_key(plan, "multilingual", ties) == "experiments.multilingual.hparams.ties"


def test_seeds_schema(smoke):
    validate_config(with_seeds(smoke, [0, 1]))
    for bad, what in (([0, 0], "non-unique"), ([], "should be non-empty|is too short"), (["a"], "not of type")):
        with pytest.raises(ConfigError, match="seeds"):
            validate_config(with_seeds(smoke, bad))


# ----- statistics ------------------------------------------------------------------------------
WORDS = "alpha beta gamma delta epsilon".split()


def records(errors, n_utt=40, model="m", seed=0):
    """``n_utt`` utterances of 5 words, ``errors`` wrong words spread over them (WER = errors / 5n)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_utt):
        ref = list(rng.choice(WORDS, 5))
        hyp = list(ref)
        for j in range(errors // n_utt + (1 if i < errors % n_utt else 0)):
            hyp[j] = "wrong"
        out.append(
            {
                "id": f"u{i:03d}",
                "language": "de",
                "task": "transcribe",
                "reference": " ".join(ref),
                "hypothesis": " ".join(hyp),
                "model": model,
            }
        )
    return out


def wer_stats(errors, n_utt=40):
    return S.corpus_stats(records(errors, n_utt), "wer")


def test_seed_draws_and_seed_mean_by_hand():
    assert (S.seed_draws(1, 5, seed=3) == 0).all()
    d = S.seed_draws(3, 1000, seed=3)
    assert d.shape == (1000, 3) and d.min() == 0 and d.max() == 2
    assert (d == S.seed_draws(3, 1000, seed=3)).all()
    scores = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    draws = np.array([[0, 0, 2], [1, 1, 1]])
    assert S.seed_mean(scores, draws).tolist() == [5 / 3, 5.0]
    assert S.seed_mean(np.array([[7.0], [8.0]]), draws).tolist() == [7.0, 8.0]  # trained once: any draw
    assert S.seed_sd([10.0, 20.0, 30.0]) == 10.0
    assert S.seed_sd([10.0]) is None


def test_one_seed_is_the_one_level_bootstrap_bit_for_bit():
    a, b, c = wer_stats(30), wer_stats(50), wer_stats(20)
    assert S.seed_bootstrap_ci([a], n_boot=300, seed=4) == S.bootstrap_ci(a, n_boot=300, seed=4)
    one = S.bootstrap_mean_scores([a, b], n_boot=300, seed=4)
    assert (S.seed_bootstrap_mean_scores([[a], [b]], n_boot=300, seed=4) == one).all()
    plain = S.paired_bootstrap_mean([a, b], [c, c], n_boot=300, seed=4)
    listed = S.paired_bootstrap_mean([[a], [b]], [[c], [c]], n_boot=300, seed=4)
    assert plain == listed and plain["n_seeds"] == 1


def test_identical_seeds_give_the_one_seed_interval():
    """Seeds and utterances are crossed: seeds that agree add no width (a nested bootstrap, one
    utterance draw per seed, would shrink the test-sample variance by the number of seeds)."""
    a = wer_stats(30)
    one = S.bootstrap_scores(a, n_boot=400, seed=1)
    three = S.seed_bootstrap_scores([[a, a, a]], n_boot=400, seed=1)[:, 0]
    np.testing.assert_allclose(three, one, rtol=1e-12)


def test_disagreeing_seeds_widen_the_interval():
    seeds = [wer_stats(e, n_utt=100) for e in (25, 50, 75)]  # WER 5, 10, 15 %
    assert S.seed_mean_score(seeds) == pytest.approx(10.0)
    lo, hi = S.seed_bootstrap_ci(seeds, n_boot=1000, seed=0)
    lo1, hi1 = S.bootstrap_ci(seeds[1], n_boot=1000, seed=0)
    assert lo < 10.0 < hi
    assert hi - lo > 2 * (hi1 - lo1)  # the seeds' spread (sd 5 points) dominates
    assert lo < 7.0 and hi > 13.0


def test_significance_accounts_for_seed_variance():
    """A's seeds (WER 4 % and 12 %, mean 8 %) against B's (9.6 % twice): one seed of A is far
    better than B on these utterances, but the seeds disagree more than the gap."""
    n = 400
    a = [wer_stats(e, n_utt=n) for e in (80, 240)]
    b = [wer_stats(192, n_utt=n)] * 2
    single = S.paired_bootstrap_mean([a[0]], [b[0]], n_boot=1000, seed=0)
    assert single["p_value"] < 0.01
    seeded = S.paired_bootstrap_mean([a], [b], n_boot=1000, seed=0)
    assert seeded["n_seeds"] == 2 and seeded["delta"] == pytest.approx(1.6)
    assert seeded["delta_ci"][0] < 0 < seeded["delta_ci"][1]
    assert seeded["p_value"] > 0.05
    # a seed-independent baseline (zero-shot, one model) pairs with every seed
    mixed = S.paired_bootstrap_mean([a], [[b[0]]], n_boot=1000, seed=0)
    assert mixed["delta"] == pytest.approx(1.6) and mixed["n_seeds"] == 2


def test_mismatched_seed_counts_are_refused():
    a = wer_stats(10)
    with pytest.raises(ValueError, match="need 1 or 3"):
        S.seed_bootstrap_scores([[a, a, a], [a, a]], n_boot=10)


# ----- a report of two seeds -------------------------------------------------------------------
SEEDS = (0, 1)
TESTS = ("de-transcribe", "es-transcribe")
N_UTT = 20
# hand WER % per model and test set (5 words x 20 utterances: WER = wrong words %)
VALUES = {
    "zeroshot": (60, 40),
    "expert-de~s0": (20, None),
    "expert-de~s1": (24, None),
    "expert-es~s0": (None, 10),
    "expert-es~s1": (None, 14),
    "joint~s0": (30, 10),
    "joint~s1": (34, 20),
    "merge-ties~s0": (25, 20),
    "merge-ties~s1": (35, 30),
}


def write_results(tmp):
    scores, hyps = [], []
    for model, values in VALUES.items():
        results, recs = [], []
        for testset, v in zip(TESTS, values):
            if v is None:
                continue
            subset = testset.split("-")[0]
            results.append(
                {
                    "model": model,
                    "testset": testset,
                    "subset": subset,
                    "task": "transcribe",
                    "language": subset,
                    "n": N_UTT,
                    "metrics": {"wer": float(v)},
                }
            )
            for r in records(v, N_UTT, model=model, seed=len(subset)):
                recs.append({**r, "id": f"{testset}-{r['id']}", "language": subset, "testset": testset})
        (tmp / f"{model}.json").write_text(json.dumps({"model": model, "results": results}))
        write_hypotheses(recs, tmp / f"{model}.jsonl")
        scores.append(tmp / f"{model}.json")
        hyps.append(tmp / f"{model}.jsonl")
    return scores, hyps


SPEC = {
    "experiment": "multilingual",
    "kind": "multilingual",
    "subsets": ["de", "es"],
    "tasks": ["transcribe"],
    "rows": [
        {"model": "zeroshot", "label": "Zero-shot", "group": "baseline"},
        {
            "model": "experts",
            "label": "Individual experts",
            "group": "baseline",
            "seeds": {s: {"per_testset": {t: f"expert-{t[:2]}~s{s}" for t in TESTS}} for s in SEEDS},
        },
        {"model": "joint", "label": "Joint", "group": "baseline", "seeds": {s: f"joint~s{s}" for s in SEEDS}},
        {
            "model": "merge-ties",
            "label": "TIES",
            "group": "merge",
            "method": "ties",
            "seeds": {s: f"merge-ties~s{s}" for s in SEEDS},
        },
    ],
    "normalise_to": "experts",
    "sweeps": [],
    "sequential": [],
    "experts": {"de": "expert-de~s0", "es": "expert-es~s0"},
    "expert_testsets": {f"expert-{t[:2]}~s{s}": [t] for t in TESTS for s in SEEDS},
    "ood_subsets": [],
    "retention_subsets": [],
    "baseline_for_significance": "joint",
    "peft_methods": [],
    "peft_cross_subsets": [],
    "seed": 0,
    "seeds": list(SEEDS),
}


def test_report_of_two_seeds(tmp_path):
    scores, hyps = write_results(tmp_path)
    out = tmp_path / "report"
    write_report(SPEC, out, scores=scores, hyps=hyps, n_boot=200, seed=0)
    rows = {r["row"]: r for r in csv.DictReader(io.StringIO((out / "table.csv").read_text()))}
    joint, ties, zs = rows["Joint"], rows["TIES"], rows["Zero-shot"]
    assert float(joint["wer:de-transcribe"]) == 32.0 and float(joint["wer:de-transcribe:sd"]) == pytest.approx(
        math.sqrt(8)
    )
    assert float(ties["wer:es-transcribe"]) == 25.0 and float(ties["wer:es-transcribe:sd"]) == pytest.approx(
        math.sqrt(50)
    )
    # the mean column: per-seed means 22.5 and 32.5 -> mean 27.5, sd sqrt(50)
    avg = next(k for k in ties if k.endswith(":sd") and "avg" in k)
    assert float(ties[avg[:-3]]) == 27.5 and float(ties[avg]) == pytest.approx(math.sqrt(50))
    assert zs["wer:de-transcribe:sd"] == ""  # trained once
    lo, hi = float(ties["wer:es-transcribe:ci_lo"]), float(ties["wer:es-transcribe:ci_hi"])
    assert lo <= 20.0 and hi >= 30.0  # both seeds' own scores inside: the seeds are resampled
    md = (out / "table.md").read_text()
    assert "32.00 ± 2.83" in md and "mean ± standard deviation over 2 training seeds" in md
    assert "training seeds 0 / 1" in md
    sig = list(csv.DictReader(io.StringIO((out / "significance.csv").read_text())))
    assert sig and all(e["n_seeds"] == "2" for e in sig if e["row"] != "Zero-shot")
    claims = (out / "claims.md").read_text()
    assert "means over 2 training seeds" in claims
    summary = json.loads((out / "summary.json").read_text())
    cell = summary["tables"]["table"]["rows"][2]["cells"]["wer:de-transcribe"]
    assert cell["seed_values"] == [30.0, 34.0] and cell["models"] == ["joint~s0", "joint~s1"]


def test_claims_use_the_seeded_statistics(tmp_path):
    """A claim's effect and CI come from the same seed-and-utterance resamples as the table's
    significance test of the same comparison (utterance ids in sorted order, as the claims read them)."""
    from speechmerge.report import claims as CL
    from speechmerge.report.scores import ResultStore, load_hyps, load_scores
    from speechmerge.report.tables import build_tables

    scores, hyps = write_results(tmp_path)
    store = ResultStore(load_scores(scores), load_hyps(hyps), n_boot=300, seed=0)
    claim = CL.ClaimDef(
        "ties-vs-joint",
        "multilingual",
        CL.Source("LoRS-Merging", "2502.17380"),
        "TIES is better than joint training.",
        CL.Side("TIES", methods=("ties",)),
        CL.Side("joint", models=("joint",)),
        "id",
        "superiority",
    )
    (res,) = CL.evaluate_claims(SPEC, store, defs=[claim])
    assert res.effect == pytest.approx(-4.0)  # mean WER 27.5 (TIES) against 23.5 (joint)
    assert "mean over 2 training seeds" in res.note
    sig = next(
        e for e in build_tables(SPEC, store)["table"].significance if e["row"] == "TIES" and "avg" in e["column"]
    )
    assert sig["delta"] == pytest.approx(res.effect)
    assert (res.ci_lo, res.ci_hi) == pytest.approx((sig["delta_ci_lo"], sig["delta_ci_hi"]))


def test_dev_selection_per_seed():
    """Dev-selected merges exist once per seed, each selected against its own seed's experts."""
    from speechmerge.evaluation.selection import reference_values

    plan = build_plan(with_seeds(load_config(ROOT / "config.yaml"), [0, 1]))
    selected = plan.selected_variants("multilingual")
    assert selected and {N.parse_seeded(v)[1] for v in selected} == {0, 1}
    for v in selected:
        spec = plan.variants[("multilingual", v)]
        assert spec["experts"] == plan.seed_experts["multilingual"][N.parse_seeded(v)[1]]
    assert all(N.parse_seeded(m)[1] is None for m in plan.reports["multilingual"].default_models.values())
    dev = plan.experts_dev_spec("multilingual")
    assert {e["model"] for e in dev["experts"]} == {j for js in plan.seed_experts["multilingual"].values() for j in js}
    scores = {
        "results": [
            {"model": f"expert-de~s{s}", "testset": "de-transcribe", "primary_metric": "wer", "metrics": {"wer": w}}
            for s, w in ((0, 20.0), (1, 30.0))
        ]
    }
    assert reference_values(scores, ["expert-de~s1"]) == {"de-transcribe": 30.0}
    with pytest.raises(ValueError, match="'de-transcribe' scored for 'expert-de~s0' and 'expert-de~s1'"):
        reference_values(scores)
