"""Dev-split selection of merging hyperparameters: grids, one-pass grid merging, the choice, the
plan's wiring (no test split ever feeds a selection) and the report's selection table."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from safetensors.torch import save_file

from speechmerge import names as N
from speechmerge.evaluation.selection import (
    choose,
    default_point_index,
    dev_score,
    get_final_hparams,
    reference_values,
)
from speechmerge.merging import REGISTRY
from speechmerge.merging.engine import merge_files
from speechmerge.merging.grid import expand_grid, merge_grid, plan_grid, point_weights
from speechmerge.plan import PlanError, build_plan
from speechmerge.report import selection as SEL

# ----- grids ---------------------------------------------------------------------------------


def test_expand_grid_order_and_errors():
    assert expand_grid({"a": [1, 2], "b": [3, 4]}) == [
        {"a": 1, "b": 3},
        {"a": 1, "b": 4},
        {"a": 2, "b": 3},
        {"a": 2, "b": 4},
    ]
    with pytest.raises(ValueError, match="'a'.*non-empty"):
        expand_grid({"a": []})
    with pytest.raises(ValueError, match="'a'.*repeated"):
        expand_grid({"a": [0.5, 0.5]})


def test_every_method_grid_names_its_hyperparameters_and_includes_values_the_method_accepts():
    for name, cls in REGISTRY.items():
        for point in expand_grid(cls.grid) if cls.grid else []:
            cls(**point)  # raises on a bad value
        if cls.grid:
            assert cls.grid_source, name


def test_plan_grid_shares_one_merge_across_scales():
    groups, points = plan_grid("task_arithmetic", {}, expand_grid({"scaling": [0.2, 0.3, 0.5]}))
    assert len(groups) == 1 and groups[0].hparams["scaling"] == 1.0
    assert [p.scale for p in points] == [0.2, 0.3, 0.5] and {p.group for p in points} == {0}
    groups, points = plan_grid("ties", {}, expand_grid({"keep_fraction": [0.1, 0.2], "scaling": [0.8, 1.0, 1.2]}))
    assert len(groups) == 2 and [p.group for p in points] == [0, 0, 0, 1, 1, 1]
    groups, points = plan_grid("boosted_tsv_m", {}, expand_grid({"beta": [0.1, 0.3]}))
    assert len(groups) == 2 and [p.scale for p in points] == [1.0, 1.0]  # β is not a scale
    with pytest.raises(ValueError, match="keep_fraction"):
        plan_grid("ties", {}, [{"keep_fraction": 1.5}])


# ----- one pass = separate merges --------------------------------------------------------------

KEYS = {
    "model.encoder.layers.0.fc1.weight": (12, 8),
    "model.encoder.layers.0.self_attn.q_proj.weight": (8, 8),
    "model.encoder.layers.0.fc1.bias": (12,),
    "model.decoder.layers.0.fc2.weight": (8, 12),
}


@pytest.fixture()
def files(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = {k: torch.randn(s, generator=g) for k, s in KEYS.items()}
    base_path = tmp_path / "base.safetensors"
    save_file(base, str(base_path))
    tvs = []
    for i in range(3):
        tv = {k: 0.1 * torch.randn(s, generator=g) for k, s in KEYS.items()}
        p = tmp_path / f"tv{i}.safetensors"
        save_file(tv, str(p))
        tvs.append(str(p))
    return str(base_path), tvs


@pytest.mark.parametrize(
    ("method", "grid", "exact"),
    [
        ("task_arithmetic", {"scaling": [0.2, 0.3, 0.5]}, False),  # Σ λτ_i vs λ Στ_i
        ("ties", {"keep_fraction": [0.1, 0.3], "scaling": [0.8, 1.4]}, True),
        ("boosted_tsv_m", {"beta": [0.1, 0.5]}, True),
        ("tsv_m", {"scaling": [0.6, 1.0]}, False),
        ("lors", {"scaling": [0.2, 0.4]}, False),
    ],
)
def test_grid_from_one_read_equals_separate_merges(files, tmp_path, method, grid, exact):
    base_path, tvs = files
    points = expand_grid(grid)
    base_sd, deltas, grid_points, info = merge_grid(base_path, tvs, method, {}, points, seed=3, progress=False)
    assert info["points"] == len(points)
    for gp, point in zip(grid_points, points):
        out = tmp_path / f"sep-{len(list(tmp_path.iterdir()))}.safetensors"
        merge_files(base_path, tvs, REGISTRY[method](**point), out, seed=3, progress=False)
        from safetensors.torch import load_file

        separate = load_file(str(out))
        together = dict(point_weights(base_sd, deltas[gp.group], gp.scale))
        assert list(together) == list(separate)
        for k in separate:
            if exact:
                assert torch.equal(together[k], separate[k]), (method, point, k)
            else:  # λ applied after the merge instead of inside it: float rounding only
                torch.testing.assert_close(together[k], separate[k], rtol=1e-6, atol=1e-6)


def test_grid_decomposes_each_matrix_once_for_all_its_merges(files, monkeypatch):
    """BoostedTSV-M's β only boosts singular values: a two-β grid runs as many SVDs as one merge."""
    from speechmerge.merging import linalg

    calls = []
    real = linalg._svd_tall
    monkeypatch.setattr(linalg, "_svd_tall", lambda m: calls.append(m.shape) or real(m))
    base_path, tvs = files
    merge_grid(base_path, tvs, "boosted_tsv_m", {}, expand_grid({"beta": [0.1]}), progress=False)
    one = len(calls)
    calls.clear()
    merge_grid(base_path, tvs, "boosted_tsv_m", {}, expand_grid({"beta": [0.1, 0.5]}), progress=False)
    assert one >= 3 * 3 and len(calls) == one  # at least one SVD per expert and matrix
    assert linalg._reuse is None  # the reuse ends with the grid


def test_svd_reuse_only_for_equal_unmodified_input():
    from speechmerge.merging import linalg

    m = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    with linalg.svd_reuse():
        first = linalg.svd(m)
        assert linalg.svd(m.clone()) is first  # equal entries: the same factors
        m.mul_(2.0)
        again = linalg.svd(m)
        assert again is not first and torch.allclose(again[1], 2 * first[1])
    assert linalg.svd(m) is not again


# ----- the choice ----------------------------------------------------------------------------


def _rec(testset, metric, value):
    return {"testset": testset, "primary_metric": metric, "metrics": {metric: value}}


def test_dev_score_by_hand():
    recs = [_rec("de-transcribe", "wer", 20.0), _rec("de-translate", "bleu", 15.0), _rec("es-transcribe", "wer", 110.0)]
    ref = {"de-transcribe": 10.0, "de-translate": 30.0, "es-transcribe": 50.0}
    # accuracies: (80/90, 15/30, 0/50) -> mean 0.462962.. -> NP 46.30
    assert dev_score(recs, "np", ref) == pytest.approx(100 * (80 / 90 + 0.5 + 0.0) / 3)
    # a reference accuracy of 0 is skipped, as in the report
    assert dev_score(recs[:1], "np", {"de-transcribe": 100.0}) != dev_score(recs[:1], "np", {"de-transcribe": 10.0})
    assert math.isnan(dev_score(recs[:1], "np", {"de-transcribe": 100.0}))
    assert dev_score(recs, "mean_accuracy") == pytest.approx((80 + 15 + 0) / 3)
    werr = [_rec("clean-transcribe", "wer", 10.0), _rec("noisy-transcribe", "wer", 30.0)]
    assert dev_score(werr, "mean_error") == 20.0
    with pytest.raises(ValueError, match="de-translate"):
        dev_score(recs, "mean_error")
    with pytest.raises(ValueError, match=r"\['es-transcribe'\]"):
        dev_score(recs, "np", {"de-transcribe": 10.0, "de-translate": 30.0})


def test_reference_values_of_the_merged_experts_only():
    doc = {
        "results": [
            {"model": "expert-de", **_rec("de-transcribe", "wer", 10.0)},
            {"model": "expert-de~s1", **_rec("de-transcribe", "wer", 12.0)},
        ]
    }
    assert reference_values(doc, ["expert-de~s1"]) == {"de-transcribe": 12.0}
    with pytest.raises(ValueError, match="expert-es"):
        reference_values(doc, ["expert-es"])


def test_choose_picks_the_dev_optimum_first_of_equals_never_nan():
    assert choose([80.0, 95.5, 91.0], "np") == 1
    assert choose([30.0, 21.0, 25.0], "mean_error") == 1
    assert choose([21.0, 30.0, 21.0], "mean_error") == 0
    assert choose([math.nan, 50.0, 40.0], "np") == 1
    with pytest.raises(ValueError, match="NaN"):
        choose([math.nan, math.nan], "np")
    with pytest.raises(ValueError, match="unknown selection metric"):
        choose([1.0], "bleu")
    assert default_point_index([{"scaling": 0.2}, {"scaling": 0.3}], {"scaling": 0.30000000000000004}) == 1
    assert default_point_index([{"scaling": 0.2}], {"scaling": 0.3}) is None
    assert get_final_hparams({"keep_fraction": 0.3}, {"scaling": 1.4}) == {"keep_fraction": 0.3, "scaling": 1.4}


# ----- the plan ------------------------------------------------------------------------------


def _config(**selection):
    from pathlib import Path

    from speechmerge.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    if selection:
        cfg["experiments"]["multilingual"]["selection"] = selection
    return cfg


def test_plan_selection_reads_dev_splits_only():
    plan = build_plan(_config())
    selected = [(e, v) for (e, v), s in plan.variants.items() if s.get("selection")]
    assert selected
    for e, v in selected:
        inputs = plan.merge_inputs(e, v)
        files = [f for x in inputs.values() for f in ([x] if isinstance(x, str) else x)]
        assert not [f for f in files if f.endswith("/test.parquet")], (e, v)
        assert inputs["devsets"] and all(f.endswith("/dev.parquet") for f in inputs["devsets"])
        spec = plan.merge_spec(e, v)
        assert [d["testset"] for d in spec["selection"]["devsets"]] == [d["testset"] for d in plan.devsets[e]]
    # NP needs the experts' dev scores; mean WER does not
    assert "reference" in plan.merge_inputs("multilingual", "ties")
    assert "reference" not in plan.merge_inputs("domains", "ties")
    assert plan.experts_dev_needed("multilingual") and not plan.experts_dev_needed("domains")
    # experts are decoded on their own dev sets only
    spec = plan.experts_dev_spec("multilingual")
    assert spec["experts"][0] == {
        "model": "expert-de",
        "devsets": [d for d in plan.devsets["multilingual"] if d["subset"] == "de"],
    }


def test_plan_grids_defaults_rows_and_errors():
    plan = build_plan(
        _config(grids={"ties": {"scaling": [0.5, 1.0]}, "tsv_m": False, "lors": None}, default_rows=["ties"])
    )
    v = plan.variants
    assert v[("multilingual", "ties")]["selection"]["grid"] == {"scaling": [0.5, 1.0]}
    assert "selection" not in v[("multilingual", "tsv_m")]  # false = the method's defaults
    assert v[("multilingual", "lors")]["selection"]["grid"] == REGISTRY["lors"].grid  # null = the method's grid
    assert v[("multilingual", N.default_variant("ties"))] == {
        "method": "ties",
        "hparams": {},
        "seed": 0,
        "experts": v[("multilingual", "ties")]["experts"],
        "variant": "ties@defaults",
    }
    labels = [r["label"] for r in plan.reports["multilingual"].rows]
    assert "TIES (paper default)" in labels or any(lb.endswith("(paper default)") for lb in labels)
    assert plan.reports["multilingual"].default_models["ties"] == "merge-ties@defaults"
    assert N.parse_variant("ties@defaults") == ("ties", None, None)
    with pytest.raises(PlanError, match=r"selection\.grids: \['tise'\]"):
        build_plan(_config(grids={"tise": {"scaling": [1.0]}}))
    with pytest.raises(PlanError, match=r"selection\.grids\.ties: unknown hyperparameter\(s\) \['lam'\]"):
        build_plan(_config(grids={"ties": {"lam": [1.0]}}))
    with pytest.raises(PlanError, match=r"selection\.grids\.ties'.*keep_fraction"):
        build_plan(_config(grids={"ties": {"keep_fraction": [0.2, 1.5]}}))
    with pytest.raises(PlanError, match=r"default_rows: \['soup'\]"):
        build_plan(_config(default_rows=["soup"]))
    cfg = _config(grids={"ties": {"scaling": [0.5, 1.0]}})
    cfg["experiments"]["multilingual"]["hparams"] = {"ties": {"scaling": 0.8}}
    with pytest.raises(PlanError, match=r"hparams\.ties: \['scaling'\] fixed here and searched"):
        build_plan(cfg)
    off = copy.deepcopy(_config(enabled=False))
    assert not build_plan(off).selected_variants("multilingual")


# ----- the report ----------------------------------------------------------------------------


def test_selection_rows_and_note():
    sel = {
        "method": "ties",
        "variant": "ties",
        "metric": "np",
        "chosen": {"scaling": 1.4},
        "chosen_index": 1,
        "curve": [{"hparams": {"scaling": 1.0}, "score": 90.0}, {"hparams": {"scaling": 1.4}, "score": 93.5}],
    }
    rows = SEL.selection_rows([sel], {"ties": "TIES"})
    assert [(r["point"], r["chosen"]) for r in rows] == [("λ=1", False), ("λ=1.4", True)]
    assert "TIES,variant" not in SEL.to_csv(rows) and "93.5000,yes" in SEL.to_csv(rows)
    assert SEL.chosen_note([sel], {"ties": "TIES"}) == (
        "Hyperparameters chosen on the dev split by dev NP (experts = 100): TIES λ=1.4."
    )


def test_read_selections_names_a_merge_info_without_selection(tmp_path):
    p = tmp_path / "ties.json"
    p.write_text('{"method": "ties", "variant": "ties"}')
    with pytest.raises(ValueError, match=r"ties\.json: merge info has no dev selection"):
        SEL.read_selections([p])
