"""The whole DAG on a tiny random Whisper (presets/smoke.yaml), and the contents of its tables."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from speechmerge.config import ROOT, load_config
from speechmerge.plan import build_plan

# One test function: the DAG runs once per session, whichever xdist worker picks it up.
pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(ROOT / "presets" / "smoke.yaml"),
        "--quiet",
        "rules",
    ]
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    plan = build_plan(load_config(ROOT / "config.yaml", ROOT / "presets" / "smoke.yaml"))
    return workdir, plan


def _table(workdir, experiment):
    return pd.read_csv(workdir / "results" / "report" / experiment / "table.csv")


def _check_tables_and_figures(smoke_run):
    workdir, plan = smoke_run
    for experiment in plan.experiments:
        out = workdir / "results" / "report" / experiment
        for name in ("table.csv", "table.md", "table.tex", "claims.csv", "claims.md"):
            assert (out / name).stat().st_size > 0, (experiment, name)
        assert list(out.glob("*.png")), experiment
        pages = workdir / "results" / "report_tables" / experiment
        assert {"table.html", "README.html"} <= {p.name for p in pages.glob("*.html")}, experiment
        assert "<table>" in (pages / "table.html").read_text()
        # a claims table with a verdict for every claim of the experiment's paper
        claims = pd.read_csv(out / "claims.csv")
        assert (
            len(claims) > 0 and claims["verdict"].isin(["reproduced", "contradicted", "inconclusive", "not run"]).all()
        )
        # one row per planned row, in the planned order
        assert list(_table(workdir, experiment)["model"]) == [r["model"] for r in plan.reports[experiment].rows]


def _check_multilingual_table(smoke_run):
    workdir, plan = smoke_run
    table = _table(workdir, "multilingual")
    for lang in plan.reports["multilingual"].subsets:
        wer, bleu = table[f"wer:{lang}-transcribe"], table[f"bleu:{lang}-translate"]
        assert wer.notna().all() and (wer >= 0).all()
        assert bleu.notna().all() and bleu.between(0, 100).all()
    # every merge of the smoke preset (and each sweep point) was evaluated on every test set
    for e, variant in plan.variants:
        if e == "multilingual":
            scores = workdir / "results" / "eval" / "multilingual" / f"merge-{variant}.json"
            assert scores.exists(), variant


def _check_domains_and_peft_tables(smoke_run):
    workdir, plan = smoke_run
    domains = _table(workdir, "domains")
    for column in ("wer:id", "wer:ood", "wer:en", "wer:avg"):
        assert column in domains.columns
    assert domains.loc[domains["model"] == "zeroshot", "wer:ood"].notna().all()
    # BoostedTSV-M's beta was chosen on dev over the preset's grid (0.3, 1.0): both points scored,
    # one chosen, and the chosen merge is the row; no test-set sweep was asked for
    report = workdir / "results" / "report" / "domains"
    sel = pd.read_csv(report / "merge_selection.csv")
    boosted = sel[sel["variant"] == "boosted_tsv_m"]
    assert list(boosted["point"]) == ["β=0.3", "β=1"] and boosted["dev_score"].notna().all()
    assert (boosted["chosen"] == "yes").sum() == 1
    assert not list(report.glob("sweep_*"))
    info = json.loads((workdir / "results" / "merged" / "domains" / "boosted_tsv_m.json").read_text())
    assert info["selection"]["split"] == "dev" and info["hparams"]["beta"] == info["selection"]["chosen"]["beta"]
    assert all(d.endswith("-transcribe") for d in info["selection"]["devsets"])
    # the multilingual test-set sweep (LoRS at 1.0) is drawn through the default merge (1/N = 0.5)
    sweep = pd.read_csv(workdir / "results" / "report" / "multilingual" / "sweep_lors_scaling.csv")
    assert list(sweep["model"]) == ["merge-lors", "merge-lors@scaling=1"]
    assert sweep["wer:avg-transcribe"].notna().all() and sweep["bleu:avg-translate"].notna().all()
    peft = _table(workdir, "peft").set_index("model")
    # trainable parameters: full > LoRA-like > 0, and S2-LoRA well below LoRA's share
    assert peft.loc["full", "params_pct"] > 90
    assert 0 < peft.loc["s2lora", "params"] < peft.loc["lora", "params"] < peft.loc["full", "params"]
    assert peft.loc["bitfit", "params"] > 0
    assert {"cer:child-transcribe", "cer:adult-transcribe"} <= set(peft.columns)


def _check_html_report(smoke_run):
    """snakemake --report holds the HTML tables next to the figures."""
    workdir, _ = smoke_run
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(ROOT / "presets" / "smoke.yaml"),
        "--report",
        str(workdir / "report.html"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = (workdir / "report.html").read_text()
    for name in ("results/report_tables/domains/table.html", "results/report/peft/rank_allocation.png"):
        assert name in html, name


def test_smoke_workflow(smoke_run):
    _check_tables_and_figures(smoke_run)
    _check_html_report(smoke_run)
    _check_multilingual_table(smoke_run)
    _check_domains_and_peft_tables(smoke_run)
