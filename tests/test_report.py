"""Tables and figures from hand-made score JSONs and hypothesis JSONLs."""

import csv
import json
import math
import runpy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from speechmerge.evaluation.decode import write_hypotheses
from speechmerge.experiments.domains import build_per_testset_table
from speechmerge.report import figures as F
from speechmerge.report import render as R
from speechmerge.report import scores as SC
from speechmerge.report import tables as T
from speechmerge.report import write_report

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
N_UTT = 20  # 5 words each: 100 reference words per test set


def hyp_records(model, testset, language, errors, task="transcribe"):
    """N_UTT utterances of 5 words; ``errors`` substituted words spread over them (WER = errors %)."""
    rng = np.random.default_rng(abs(hash(testset)) % 2**32)
    recs = []
    for i in range(N_UTT):
        ref = list(rng.choice(WORDS, 5))
        hyp = list(ref)
        k = errors // N_UTT + (1 if i < errors % N_UTT else 0)
        for j in range(k):
            hyp[j] = "wrong"
        recs.append(
            {
                "id": f"{testset}-{i}",
                "language": language,
                "task": task,
                "reference": " ".join(ref),
                "hypothesis": " ".join(hyp),
                "model": model,
                "testset": testset,
            }
        )
    return recs


def write_model(tmp, model, values, language_of=lambda s: s):
    """values: {testset: number}; WER sets get matching hypotheses, BLEU sets hand numbers."""
    results, hyps = [], []
    for testset, v in values.items():
        subset, task = testset.rsplit("-", 1)
        lang = language_of(subset)
        metrics = {"wer": v, "cer": v / 2} if task == "transcribe" else {"bleu": v, "chrf": v + 10}
        results.append(
            {
                "model": model,
                "experiment": "x",
                "testset": testset,
                "subset": subset,
                "task": task,
                "language": lang,
                "n": N_UTT,
                "metrics": metrics,
                "bleu_signature": "nrefs:1|tok:13a" if task == "translate" else None,
            }
        )
        hyps += hyp_records(model, testset, lang, int(round(v)) if task == "transcribe" else 10, task)
    (tmp / f"{model}.json").write_text(json.dumps({"model": model, "experiment": "x", "results": results}))
    write_hypotheses(hyps, tmp / f"{model}.jsonl")
    return tmp / f"{model}.json", tmp / f"{model}.jsonl"


ML_SPEC = {
    "experiment": "multilingual",
    "kind": "multilingual",
    "subsets": ["de", "es"],
    "tasks": ["transcribe", "translate"],
    "rows": [
        {"model": "zeroshot", "label": "Zero-shot", "group": "baseline"},
        {
            "model": "experts",
            "label": "Individual experts",
            "group": "baseline",
            "per_subset": {"de": "expert-de", "es": "expert-es"},
        },
        {"model": "joint", "label": "Multi-task joint", "group": "baseline"},
        {"model": "merge-ties", "label": "TIES_& 50%", "group": "merge", "method": "ties"},
    ],
    "normalise_to": "experts",
    "sweeps": [
        {
            "method": "ties",
            "param": "lambda",
            "points": [
                {"value": 0.5, "model": "merge-ties@lambda=0.5"},
                {"value": 1.0, "model": "merge-ties@lambda=1"},
            ],
        }
    ],
    "sequential": [],
    "experts": {"de": "expert-de", "es": "expert-es"},
    "expert_testsets": {"expert-de": ["de-transcribe", "de-translate"], "expert-es": ["es-transcribe", "es-translate"]},
    "ood_subsets": [],
    "retention_subsets": [],
    "baseline_for_significance": "joint",
    "peft_methods": [],
    "peft_cross_subsets": [],
}

ML_VALUES = {  # hand numbers: WER % (transcribe), BLEU (translate)
    "zeroshot": {"de-transcribe": 60, "es-transcribe": 40, "de-translate": 10, "es-translate": 8},
    "expert-de": {"de-transcribe": 20, "de-translate": 30},
    "expert-es": {"es-transcribe": 10, "es-translate": 20},
    "joint": {"de-transcribe": 30, "es-transcribe": 10, "de-translate": 15, "es-translate": 20},
    "merge-ties": {"de-transcribe": 25, "es-transcribe": 20, "de-translate": 30, "es-translate": 10},
    "merge-ties@lambda=0.5": {"de-transcribe": 35, "es-transcribe": 30, "de-translate": 12, "es-translate": 9},
    "merge-ties@lambda=1": {"de-transcribe": 25, "es-transcribe": 20, "de-translate": 30, "es-translate": 10},
}


@pytest.fixture()
def ml_files(tmp_path):
    scores, hyps = [], []
    for model, vals in ML_VALUES.items():
        s, h = write_model(tmp_path, model, vals)
        scores.append(s)
        hyps.append(h)
    return scores, hyps


def ml_table(ml_files, n_boot=50):
    scores, hyps = ml_files
    store = SC.ResultStore(SC.load_scores(scores), SC.load_hyps(hyps), n_boot=n_boot)
    return T.build_main_table(ML_SPEC, store)


def test_multilingual_table_numbers(ml_files):
    t = ml_table(ml_files)
    # experts row is composite: each column from its own expert
    assert t.value("experts", "wer:de-transcribe") == 20 and t.value("experts", "bleu:es-translate") == 20
    assert t.value("joint", "wer:avg-transcribe") == pytest.approx(20.0)
    assert t.value("joint", "bleu:avg-translate") == pytest.approx(17.5)
    # NP of the reference row is 100 by definition
    for key in ("np", "np:transcribe", "np:translate"):
        assert t.value("experts", key) == pytest.approx(100.0)
    # joint: ASR a = (70/80, 90/90), ST a = (15/30, 20/20)
    assert t.value("joint", "np:transcribe") == pytest.approx(100 * (70 / 80 + 1) / 2)
    assert t.value("joint", "np:translate") == pytest.approx(100 * (0.5 + 1) / 2)
    assert t.value("joint", "np") == pytest.approx(100 * (70 / 80 + 1 + 0.5 + 1) / 4)
    # bootstrap interval of a WER cell (hypotheses match the stated WER) contains the value
    cell = next(r for r in t.rows if r.model == "joint").cells["wer:de-transcribe"]
    assert cell.ci[0] <= 30 <= cell.ci[1]
    # significance vs joint: zero-shot de WER 60 vs 30 -> tiny p; joint itself has none
    z = next(r for r in t.rows if r.model == "zeroshot").cells
    assert z["wer:de-transcribe"].p < 0.05 and z["wer:avg-transcribe"].p < 0.05
    assert next(r for r in t.rows if r.model == "joint").cells["wer:de-transcribe"].p is None
    # es WER of experts and joint are equal (10): identical hypotheses -> p = 1
    assert next(r for r in t.rows if r.model == "experts").cells["wer:es-transcribe"].p == pytest.approx(1.0)


def test_experts_row_per_language_and_task(tmp_path):
    """experts_per_task: each column of the experts row comes from that test set's own expert."""
    values = {
        "zeroshot": ML_VALUES["zeroshot"],
        "expert-de-transcribe": {"de-transcribe": 15},
        "expert-de-translate": {"de-translate": 33},
        "expert-es-transcribe": {"es-transcribe": 12},
        "expert-es-translate": {"es-translate": 21},
    }
    files = [write_model(tmp_path, m, v) for m, v in values.items()]
    per_testset = {t: f"expert-{t}" for t in ("de-transcribe", "de-translate", "es-transcribe", "es-translate")}
    spec = {
        **ML_SPEC,
        "rows": [ML_SPEC["rows"][0], {**ML_SPEC["rows"][1], "per_testset": per_testset}],
        "sweeps": [],
        "experts": per_testset,
        "expert_testsets": {j: [t] for t, j in per_testset.items()},
    }
    del spec["rows"][1]["per_subset"]
    store = SC.ResultStore(SC.load_scores([f[0] for f in files]), SC.load_hyps([f[1] for f in files]), n_boot=20)
    t = T.build_main_table(spec, store)
    assert t.value("experts", "wer:de-transcribe") == 15 and t.value("experts", "bleu:de-translate") == 33
    assert t.value("experts", "wer:avg-transcribe") == pytest.approx(13.5)
    assert t.value("experts", "np") == pytest.approx(100.0)
    assert not store.missing


def test_best_marking_and_escapes(ml_files):
    t = ml_table(ml_files)
    md, tex = R.to_markdown(t), R.to_latex(t)
    # best es WER is 10.00 (experts and joint tie: both bold); best de BLEU 30 (experts and TIES)
    assert md.count("**10.00**") >= 2 and "**30.00**" in md
    assert r"\textbf{10.00}" in tex and r"\textbf{100.0}" in tex
    assert r"TIES\_\& 50\%" in tex and "TIES\\_& 50%" in md
    assert r"$\downarrow$" in tex and "\\toprule" in tex and "\\cmidrule" in tex
    assert "NP (normalised performance)" in md
    assert (
        R.latex_escape("a_b & c% $x$ #1 {y} ~ ^") == r"a\_b \& c\% \$x\$ \#1 \{y\} \textasciitilde{} \textasciicircum{}"
    )
    csv_text = R.to_csv(t)
    header = csv_text.splitlines()[0].split(",")
    assert "wer:de-transcribe:ci_lo" in header and "np" in header


def test_missing_cells_are_nan_and_listed(tmp_path):
    s, h = write_model(tmp_path, "zeroshot", {"de-transcribe": 50})
    store = SC.ResultStore(SC.load_scores([s]), SC.load_hyps([h]), n_boot=20)
    spec = {**ML_SPEC, "tasks": ["transcribe"]}
    t = T.build_main_table(spec, store)
    assert t.value("zeroshot", "wer:de-transcribe") == 50
    assert math.isnan(t.value("zeroshot", "wer:es-transcribe"))
    assert math.isnan(t.value("zeroshot", "wer:avg-transcribe"))
    assert "joint on de-transcribe" in store.missing


def test_domains_table(tmp_path):
    spec = {
        "experiment": "domains",
        "kind": "domains",
        "subsets": ["clean", "noisy"],
        "tasks": ["transcribe"],
        "rows": [
            {"model": "zeroshot", "label": "Zero-shot", "group": "baseline"},
            {
                "model": "experts",
                "label": "ID-FT",
                "group": "baseline",
                "per_subset": {"clean": "expert-clean", "noisy": "expert-noisy"},
            },
            {"model": "joint", "label": "Full-FT", "group": "baseline"},
            {"model": "merge-tsv_m", "label": "TSV-M", "group": "merge", "method": "tsv_m"},
        ],
        "normalise_to": "experts",
        "sweeps": [],
        "sequential": [],
        "experts": {},
        "ood_subsets": ["far"],
        "retention_subsets": ["lang_en", "lang_es", "lang_zh"],
        "baseline_for_significance": "joint",
        "peft_methods": [],
        "peft_cross_subsets": [],
    }
    lang = {"clean": "pt", "noisy": "pt", "far": "pt", "lang_en": "en", "lang_es": "es", "lang_zh": "zh"}
    vals = {
        "zeroshot": dict(zip(["clean", "noisy", "far", "lang_en", "lang_es", "lang_zh"], [20, 40, 50, 10, 12, 30])),
        "expert-clean": {"clean": 10},
        "expert-noisy": {"noisy": 20},
        "joint": dict(zip(["clean", "noisy", "far", "lang_en", "lang_es", "lang_zh"], [12, 22, 40, 14, 18, 40])),
        "merge-tsv_m": dict(zip(["clean", "noisy", "far", "lang_en", "lang_es", "lang_zh"], [14, 24, 36, 11, 13, 32])),
    }
    files = [
        write_model(tmp_path, m, {f"{k}-transcribe": v for k, v in d.items()}, language_of=lambda s: lang[s])
        for m, d in vals.items()
    ]
    store = SC.ResultStore(SC.load_scores([f[0] for f in files]), SC.load_hyps([f[1] for f in files]), n_boot=30)
    t = T.build_main_table(spec, store)
    assert t.value("joint", "wer:id") == pytest.approx(17.0)
    assert t.value("joint", "wer:ood") == pytest.approx(40.0)
    assert t.value("joint", "wer:en") == pytest.approx(14.0)
    # zh retention is scored by CER (unsegmented): the stored cer is wer / 2 = 20
    assert t.value("joint", "wer:multi") == pytest.approx((18 + 20) / 2)
    assert t.value("joint", "wer:avg") == pytest.approx((12 + 22 + 40 + 14 + 18 + 20) / 6)
    assert t.value("experts", "wer:id") == pytest.approx(15.0) and math.isnan(t.value("experts", "wer:avg"))
    assert [c.header for c in t.shown] == ["ID", "OOD", "English", "Multilingual", "Avg"]
    per = build_per_testset_table(spec, store)
    assert (
        per.value("merge-tsv_m", "wer:far-transcribe") == 36
        and per.value("merge-tsv_m", "cer:lang_zh-transcribe") == 16
    )


def test_taskvector_cosine_streaming(tmp_path):
    g = torch.Generator().manual_seed(0)
    keys = ["model.encoder.layers.0.self_attn.q_proj.weight", "model.decoder.layers.0.fc1.weight"]
    shapes = [(8, 8), (16, 8)]
    tvs = []
    for i in range(3):
        tv = {k: torch.randn(*s, generator=g) for k, s in zip(keys, shapes)}
        tv["model.encoder.layers.0.self_attn.q_proj.bias"] = torch.randn(8, generator=g)  # not a matrix: ignored
        tvs.append(tv)
    tvs[2] = {k: -v for k, v in tvs[0].items()}  # exactly opposite to expert 0
    paths = []
    for i, tv in enumerate(tvs):
        save_file(tv, str(tmp_path / f"expert-{i}.safetensors"))
        paths.append(tmp_path / f"expert-{i}.safetensors")
    gram, used = F.taskvector_gram(paths)
    assert sorted(used) == sorted(keys)
    flat = [torch.cat([tv[k].reshape(-1) for k in keys]).double() for tv in tvs]
    for i in range(3):
        for j in range(3):
            assert gram[i, j] == pytest.approx(float(flat[i] @ flat[j]))
    cos = F.cosine_from_gram(gram)
    assert cos[0, 2] == pytest.approx(-1.0) and cos[1, 1] == pytest.approx(1.0)
    out, _ = F.cosine_heatmap(paths, ["a", "b", "c"], tmp_path / "cos", title="t")
    assert all(p.exists() and p.stat().st_size > 1000 for p in out)
    out = F.spectra_plot(paths, ["a", "b", "c"], tmp_path / "spec", beta=0.3, title="t")
    assert all(p.exists() for p in out)


def test_rank_grid():
    ranks = {
        "base_model.model.model.encoder.layers.0.self_attn.q_proj": 3,
        "model.encoder.layers.1.self_attn.q_proj": 5,
        "model.decoder.layers.0.encoder_attn.v_proj": 2,
        "model.decoder.layers.1.fc2": 7,
    }
    grid, labels, layers = F.rank_grid(ranks)
    assert layers == [0, 1] and labels == ["enc self q", "dec cross v", "dec mlp fc2"]
    assert grid[0].tolist() == [3, 5] and grid[2, 1] == 7 and math.isnan(grid[1, 1])
    with pytest.raises(ValueError, match="no module names"):
        F.rank_grid({"foo": 1})


def test_write_report_multilingual(ml_files, tmp_path):
    scores, hyps = ml_files
    g = torch.Generator().manual_seed(1)
    tvs = []
    for sub in ("de", "es"):
        p = tmp_path / f"expert-{sub}.safetensors"
        save_file(
            {
                "model.encoder.layers.0.self_attn.q_proj.weight": torch.randn(8, 8, generator=g),
                "model.decoder.layers.0.fc1.weight": torch.randn(16, 8, generator=g),
            },
            str(p),
        )
        tvs.append(p)
    spec = {**ML_SPEC, "sequential": [{"model": "zeroshot", "subset": "de"}, {"model": "joint", "subset": "es"}]}
    out = tmp_path / "report"
    # hand-made BLEU and CER numbers that no hypotheses give: the score check is tested elsewhere
    summary = write_report(spec, out, scores=scores, hyps=hyps, taskvectors=tvs, n_boot=30, verify=False)
    names = {f["file"] for f in summary["files"]}
    for f in (
        "table.csv",
        "table.md",
        "table.tex",
        "significance.csv",
        "methods.png",
        "methods.pdf",
        "sweep_ties_lambda.png",
        "sweep_ties_lambda.md",
        "forgetting.png",
        "taskvector_cosine.png",
        "taskvector_spectra.pdf",
    ):
        assert f in names and (out / f).exists(), f
    assert (out / "README.md").exists() and json.loads((out / "summary.json").read_text())[
        "experiment"
    ] == "multilingual"
    # training table: each expert on its own test sets against zero-shot (hand numbers of ML_VALUES)
    training = {(r["job"], r["testset"]): r for r in summary["training"]}
    assert set(training) == {
        ("expert-de", "de-transcribe"),
        ("expert-de", "de-translate"),
        ("expert-es", "es-transcribe"),
        ("expert-es", "es-translate"),
    }
    assert training[("expert-de", "de-transcribe")]["start"] == 60
    assert training[("expert-de", "de-transcribe")]["change"] == -40
    assert (
        training[("expert-es", "es-translate")]["change"] == 12
        and training[("expert-es", "es-translate")]["metric"] == "BLEU"
    )
    assert "| expert-de | de-transcribe | WER | 60.0 | 20.0 | -40.0 |" in (out / "training.md").read_text()
    sweep = summary["tables"]["sweep_ties_lambda"]
    assert sweep["rows"][0]["cells"]["wer:avg-transcribe"]["value"] == pytest.approx(32.5)
    assert not list(tmp_path.glob(".report.*"))  # no temporary left behind


HANZI = "一二三四五六七八九十"


def write_model_zh(tmp, model, cers):
    """values: {testset: CER %}; hypotheses of 20 five-character utterances with that many
    characters substituted, scores computed from them (the report checks they match)."""
    from speechmerge.evaluation.metrics import score_texts

    results, hyps = [], []
    for testset, cer in cers.items():
        rng = np.random.default_rng(abs(hash(testset)) % 2**32)
        recs = []
        for i in range(N_UTT):
            ref = list(rng.choice(list(HANZI), 5))
            k = cer // N_UTT + (1 if i < cer % N_UTT else 0)
            hyp = ["错"] * k + ref[k:]
            recs.append(
                {
                    "id": f"{testset}-{i}",
                    "language": "zh",
                    "task": "transcribe",
                    "reference": "".join(ref),
                    "hypothesis": "".join(hyp),
                    "model": model,
                    "testset": testset,
                }
            )
        scored = score_texts(
            [r["reference"] for r in recs],
            [r["hypothesis"] for r in recs],
            task="transcribe",
            language="zh",
            ids=[r["id"] for r in recs],
        )
        assert scored["metrics"]["cer"] == pytest.approx(cer)
        results.append(
            {
                "model": model,
                "experiment": "x",
                "testset": testset,
                "subset": testset.rsplit("-", 1)[0],
                "task": "transcribe",
                "language": "zh",
                "n": N_UTT,
                "metrics": scored["metrics"],
            }
        )
        hyps += recs
    (tmp / f"{model}.json").write_text(json.dumps({"model": model, "experiment": "x", "results": results}))
    write_hypotheses(hyps, tmp / f"{model}.jsonl")
    return tmp / f"{model}.json", tmp / f"{model}.jsonl"


def test_report_script_peft(tmp_path):
    cers = {
        "zeroshot": {"child-transcribe": 30, "adult-transcribe": 15},
        "full": {"child-transcribe": 10, "adult-transcribe": 14},
        "s2lora": {"child-transcribe": 12, "adult-transcribe": 11},
    }
    files = [write_model_zh(tmp_path, m, v) for m, v in cers.items()]
    infos = []
    for job, n in (("full", 72_000_000), ("s2lora", 14_400)):
        d = tmp_path / "models" / job
        d.mkdir(parents=True)
        (d / "train_info.json").write_text(
            json.dumps(
                {
                    "job": job,
                    "trainable_params": n,
                    "total_params": 72_000_000,
                    "trainable_percent": 100 * n / 72_000_000,
                }
            )
        )
        infos.append(d / "train_info.json")
    (tmp_path / "models" / "s2lora" / "rank_allocation.json").write_text(
        json.dumps(
            {
                f"model.{side}.layers.{i}.{m}": (i + 1) * 2
                for side in ("encoder", "decoder")
                for i in range(2)
                for m in ("self_attn.q_proj", "self_attn.v_proj", "fc1")
            }
        )
    )
    spec = {
        "experiment": "peft",
        "kind": "peft",
        "subsets": ["child"],
        "tasks": ["transcribe"],
        "rows": [
            {"model": "zeroshot", "label": "Zero-shot", "group": "baseline"},
            {"model": "full", "label": "Full fine-tuning", "group": "peft", "method": "full"},
            {"model": "s2lora", "label": "S2-LoRA", "group": "peft", "method": "s2lora"},
        ],
        "normalise_to": None,
        "sweeps": [],
        "sequential": [],
        "experts": {},
        "ood_subsets": [],
        "retention_subsets": [],
        "baseline_for_significance": "full",
        "peft_methods": ["full", "s2lora"],
        "expert_testsets": {"full": ["child-transcribe"], "s2lora": ["child-transcribe"]},
        "peft_cross_subsets": ["adult"],
        "config_hash": "h",
    }
    snake = SimpleNamespace(
        input=SimpleNamespace(
            scores=[str(f[0]) for f in files],
            hyps=[str(f[1]) for f in files],
            train_infos=[str(p) for p in infos],
            rank_allocations=[str(tmp_path / "models" / "s2lora" / "rank_allocation.json")],
            taskvectors=[],
        ),
        output=SimpleNamespace(dir=str(tmp_path / "out")),
        params=SimpleNamespace(spec=spec),
        log=[str(tmp_path / "report.log")],
        threads=1,
    )
    runpy.run_path("workflow_scripts/report.py", init_globals={"snakemake": snake})
    table = json.loads((tmp_path / "out" / "summary.json").read_text())["tables"]["table"]
    rows = {r["model"]: r["cells"] for r in table["rows"]}
    # peft is scored by CER
    assert rows["s2lora"]["cer:child-transcribe"]["value"] == 12 and rows["full"]["cer:adult-transcribe"]["value"] == 14
    assert rows["s2lora"]["params"]["value"] == 14_400 and rows["s2lora"]["params_pct"]["value"] == pytest.approx(0.02)
    assert rows["zeroshot"]["params"]["value"] == 0
    md = (tmp_path / "out" / "table.md").read_text()
    assert "14.4k" in md and "72M" in md
    assert (tmp_path / "out" / "rank_allocation.png").exists()
    # training table: the PEFT methods on the in-domain test set, with their trainable parameters
    csv_rows = list(csv.DictReader(open(tmp_path / "out" / "training.csv")))
    assert [(r["job"], r["testset"]) for r in csv_rows] == [
        ("full", "child-transcribe"),
        ("s2lora", "child-transcribe"),
    ]
    assert float(csv_rows[1]["start"]) == 30 and float(csv_rows[1]["finetuned"]) == 12
    assert int(csv_rows[1]["trainable_params"]) == 14_400


def test_sweep_gets_the_default_point():
    from speechmerge.report.writer import add_default_points

    spec = add_default_points(ML_SPEC, {"ties": {"lambda": 0.75}})
    points = spec["sweeps"][0]["points"]
    assert [p["value"] for p in points] == [0.5, 0.75, 1.0]
    assert points[1] == {"value": 0.75, "model": "merge-ties", "default": True}
    assert ML_SPEC["sweeps"][0]["points"][1]["value"] == 1.0 and len(ML_SPEC["sweeps"][0]["points"]) == 2
    assert add_default_points(ML_SPEC, {"ties": {"lambda": 1.0}})["sweeps"] == ML_SPEC["sweeps"]  # already a point
    assert add_default_points(ML_SPEC, {})["sweeps"] == ML_SPEC["sweeps"]  # no default merge


def test_sweep_table_labels_the_default(ml_files, tmp_path):
    scores, hyps = ml_files
    spec = {**ML_SPEC, "default_merges": {"ties": {"lambda": 0.75}}}
    summary = write_report(
        spec, tmp_path / "report", scores=scores, hyps=hyps, n_boot=20, verify=False
    )  # hand-made BLEU / CER numbers
    labels = [r["label"] for r in summary["tables"]["sweep_ties_lambda"]["rows"]]
    assert labels == ["lambda = 0.5", "lambda = 0.75 (default)", "lambda = 1.0"]


def test_sweep_default_point_resolves_n_dependent_defaults():
    """LoRS' default scaling None means 1/N: with 5 experts the default merge sits at 0.2."""
    from speechmerge.plan import Plan
    from speechmerge.plan.merges import default_merges
    from speechmerge.report.writer import add_default_points

    spec = {
        **ML_SPEC,
        "rows": ML_SPEC["rows"] + [{"model": "merge-lors", "label": "LoRS", "group": "merge", "method": "lors"}],
        "sweeps": [
            {"method": "lors", "param": "scaling", "points": [{"value": 0.4, "model": "merge-lors@scaling=0.4"}]}
        ],
    }
    plan = Plan(config={})
    experts = [f"e{i}" for i in range(5)]
    plan.variants[("ml", "lors")] = {"method": "lors", "variant": "lors", "experts": experts, "hparams": {}}
    plan.variants[("ml", "lors@scaling=0.4")] = {
        "method": "lors",
        "variant": "lors@scaling=0.4",
        "experts": experts,
        "hparams": {"scaling": 0.4},
    }
    defaults = default_merges(plan, "ml")  # a sweep point is no default merge
    points = add_default_points(spec, defaults)["sweeps"][0]["points"]
    assert [(p["value"], p.get("default", False)) for p in points] == [(pytest.approx(0.2), True), (0.4, False)]
