"""Subspace and pruning merge methods (Iso-C, Iso-CTS, TSV-M, TSV-M w/ NS, BoostedTSV-M, LoRS and
its halves) and the linear algebra under them. Small tensors, hand-computed expectations."""

from __future__ import annotations

import math

import pytest
import torch

from speechmerge.merging import get_method
from speechmerge.merging.base import REGISTRY, TensorContext
from speechmerge.merging.linalg import (
    MUON_BAND,
    MUON_BAND_MIN_INPUT,
    boost_spectrum,
    boost_threshold_index,
    low_rank_approx,
    lowrank_sparse_split,
    magnitude_prune,
    newton_schulz,
    polar_factor,
    svd,
    truncated_svd,
)
from speechmerge.merging.methods import (  # noqa: F401  (registers the methods)
    boosted_tsv_m,
    iso_c,
    iso_cts,
    lors,
    lors_lowrank,
    lors_sparse,
    tsv_m,
    tsv_m_ns,
)
from speechmerge.merging.methods.iso_cts import iso_cts_sizes
from speechmerge.merging.methods.lors import lors_rank
from speechmerge.merging.methods.tsv_m import tsv_bases, tsv_components
from speechmerge.merging.streaming import InMemorySource

MINE = ["iso_c", "iso_cts", "tsv_m", "tsv_m_ns", "boosted_tsv_m", "lors", "lors_lowrank", "lors_sparse"]
MAT = TensorContext("model.encoder.layers.0.self_attn.q_proj.weight", True)
VEC = TensorContext("model.encoder.layers.0.self_attn.q_proj.bias", False)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def tasks(n: int, shape=(16, 12), seed: int = 0) -> list[torch.Tensor]:
    return [rand(*shape, seed=seed + i) for i in range(n)]


def eye(n: int) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float32)


# ---------------------------------------------------------------------------------- linalg


@pytest.mark.parametrize("shape", [(16, 12), (12, 16)])
def test_svd_and_truncated_svd(shape):
    m = rand(*shape)
    u, s, vh = svd(m)
    assert u.shape == (shape[0], 12) and vh.shape == (12, shape[1])
    torch.testing.assert_close((u * s) @ vh, m, atol=1e-5, rtol=0)
    assert bool((s[:-1] >= s[1:]).all())
    uk, sk, vhk = truncated_svd(m, 3)
    assert uk.shape == (shape[0], 3) and sk.shape == (3,) and vhk.shape == (3, shape[1])
    torch.testing.assert_close(sk, s[:3])
    assert truncated_svd(m, 100)[1].numel() == 12  # capped at min(shape)
    assert int(torch.linalg.matrix_rank(low_rank_approx(m, 3))) == 3
    assert torch.count_nonzero(low_rank_approx(m, 0)) == 0
    with pytest.raises(ValueError, match="k must be"):
        truncated_svd(m, -1)


def test_polar_factor_recovers_orthogonal_factor():
    q, _ = torch.linalg.qr(rand(16, 12))  # orthonormal columns
    b = rand(12, 12, seed=1)
    h = b @ b.mT + 12 * eye(12)  # symmetric positive definite
    w = polar_factor(q @ h)
    torch.testing.assert_close(w, q, atol=1e-5, rtol=0)
    torch.testing.assert_close(w.mT @ w, eye(12), atol=1e-5, rtol=0)
    wide = polar_factor(rand(5, 9))
    torch.testing.assert_close(wide @ wide.mT, eye(5), atol=1e-5, rtol=0)


def test_polar_factor_of_rank_deficient_stack_is_the_unique_partial_isometry():
    b, _ = torch.linalg.qr(rand(10, 3))
    w = polar_factor(torch.cat([b, b], 1))  # rank 3: singular values sqrt(2) x3 and 0 x3
    torch.testing.assert_close(w, torch.cat([b, b], 1) / math.sqrt(2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(16, 12), (12, 16)])
def test_newton_schulz_muon_band_and_directions(shape):
    a = rand(*shape, seed=3)
    s = torch.linalg.svdvals(a)
    assert float(s.min() / torch.linalg.matrix_norm(a)) >= MUON_BAND_MIN_INPUT  # band precondition
    x = newton_schulz(a)
    assert x.shape == a.shape and x.dtype == torch.float32
    sx = torch.linalg.svdvals(x)
    assert MUON_BAND[0] <= float(sx.min()) and float(sx.max()) <= MUON_BAND[1]
    assert float(sx.min()) < 0.99  # the quintic does NOT converge to orthonormal (documented)
    torch.testing.assert_close(polar_factor(x), polar_factor(a), atol=1e-4, rtol=0)


def test_newton_schulz_cubic_converges_to_polar_factor():
    a = rand(16, 12, seed=4) + 4 * torch.cat([eye(12), torch.zeros(4, 12)])  # well conditioned
    x = newton_schulz(a, steps=40, coefficients="cubic")
    torch.testing.assert_close(x, polar_factor(a), atol=1e-5, rtol=0)
    same = newton_schulz(a, steps=2, coefficients=[(1.5, -0.5, 0.0), (1.5, -0.5, 0.0)])
    torch.testing.assert_close(same, newton_schulz(a, steps=2, coefficients="cubic"))


def test_newton_schulz_rejects_bad_coefficients():
    with pytest.raises(ValueError, match="preset"):
        newton_schulz(rand(4, 3), coefficients="quartic")
    with pytest.raises(ValueError, match="triple"):
        newton_schulz(rand(4, 3), steps=5, coefficients=[1.0, 2.0])


def test_boost_spectrum_hand_example():
    sigma = torch.tensor([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 -> E = [16, 20, 21, 22] / 22
    assert boost_spectrum(sigma, 0.5).tolist() == [4.0, 4.0, 4.0, 4.0]  # E_0 = .727 >= .5 -> j* = 0
    assert boost_spectrum(sigma, 0.8).tolist() == [4.0, 2.0, 2.0, 2.0]  # E_1 = .909 -> j* = 1
    assert boost_spectrum(sigma, 0.95).tolist() == [4.0, 2.0, 1.0, 1.0]  # E_2 = .9545 -> j* = 2
    assert boost_spectrum(sigma, 1.0).tolist() == [4.0, 2.0, 1.0, 1.0]
    assert boost_threshold_index(sigma, 16 / 22) == 0  # E_j >= beta, not >
    assert boost_threshold_index(sigma, 0.96) == 3
    assert boost_threshold_index(sigma, 1.0) == 3
    tail = torch.tensor([5.0, 3.0, 1.0, 0.5, 0.0])
    assert boost_spectrum(tail, 0.9).tolist() == [5.0, 3.0, 3.0, 3.0, 3.0]  # 25/35.25 < .9 <= 34/35.25
    assert boost_spectrum(torch.zeros(3), 0.3).tolist() == [0.0, 0.0, 0.0]


def test_boost_spectrum_rejects_bad_input():
    with pytest.raises(ValueError, match="beta"):
        boost_spectrum(torch.tensor([2.0, 1.0]), 0.0)
    with pytest.raises(ValueError, match="beta"):
        boost_spectrum(torch.tensor([2.0, 1.0]), 1.5)
    with pytest.raises(ValueError, match="descending"):
        boost_spectrum(torch.tensor([1.0, 2.0]), 0.5)


def test_magnitude_prune_exact_count_and_entries():
    m = torch.tensor([[1.0, -5.0, 2.0], [0.5, 3.0, -4.0]])
    # k = int(6 * 0.5) = 3 -> keep -5, -4, 3
    assert magnitude_prune(m, 0.5).tolist() == [[0.0, -5.0, 0.0], [0.0, 3.0, -4.0]]
    assert torch.count_nonzero(magnitude_prune(m, 0.1)) == 0  # int(0.6) = 0
    assert torch.equal(magnitude_prune(m, 1.0), m)
    with pytest.raises(ValueError, match="keep_fraction"):
        magnitude_prune(m, 1.5)
    big = rand(16, 12)
    assert torch.count_nonzero(magnitude_prune(big, 0.2)) == int(192 * 0.2)  # 38


def test_lowrank_sparse_split_properties():
    tau = rand(16, 12, seed=7)
    low, sparse = lowrank_sparse_split(tau, 2, 0.2)
    assert int(torch.linalg.matrix_rank(low)) == 2
    assert int(torch.count_nonzero(sparse)) == int(tau.numel() * 0.2)
    torch.testing.assert_close(low, low_rank_approx(tau, 2))
    residual = tau - low
    kept = sparse != 0
    torch.testing.assert_close(sparse[kept], residual[kept])
    assert float(residual[~kept].abs().max()) <= float(residual[kept].abs().min())


def test_lowrank_sparse_split_hand_example():
    # singular values 4, 2, 1; best rank-1 part is the 4; the residual's largest |entry| is the -2
    tau = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -2.0, 0.0]])
    low, sparse = lowrank_sparse_split(tau, 1, 0.2)  # k = int(9 * 0.2) = 1
    torch.testing.assert_close(low, torch.tensor([[4.0, 0, 0], [0, 0, 0], [0, 0, 0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(sparse, torch.tensor([[0.0, 0, 0], [0, 0, 0], [0, -2.0, 0]]), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------- methods


def test_registered_with_defaults_and_sources():
    for name in MINE:
        m = get_method(name)
        assert type(m) is REGISTRY[name] and m.source and m.hparams == REGISTRY[name].defaults
    assert REGISTRY["boosted_tsv_m"].defaults["beta"] == 0.3
    assert REGISTRY["lors"].defaults == {"scaling": None, "rank_fraction": 0.01, "rank": None, "keep_fraction": 0.2}
    assert REGISTRY["iso_cts"].defaults["common_space_fraction"] == 0.8
    assert REGISTRY["tsv_m_ns"].defaults["ns_coefficients"] == [3.4445, -4.7750, 2.0315]


@pytest.mark.parametrize("name", MINE)
@pytest.mark.parametrize("shape", [(16, 12), (12, 16)])
def test_shape_dtype_and_determinism(name, shape):
    method = get_method(name)
    taus = tasks(3, shape)
    base = torch.zeros(shape)
    a = method.merge_tensor(base, taus, MAT)
    b = method.merge_tensor(base, [t.clone() for t in taus], MAT)
    assert a.shape == base.shape and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert bool(torch.isfinite(a).all())


@pytest.mark.parametrize("name", MINE)
def test_shape_mismatch_names_the_tensor(name):
    with pytest.raises(ValueError, match="q_proj.weight"):
        get_method(name).merge_tensor(torch.zeros(4, 3), [torch.zeros(4, 3), torch.zeros(3, 4)], MAT)


@pytest.mark.parametrize(
    "name, params, key",
    [
        ("iso_c", {"scaling": "big"}, "scaling"),
        ("iso_c", {"non_matrix": "median"}, "non_matrix"),
        ("iso_cts", {"common_space_fraction": 1.5}, "common_space_fraction"),
        ("iso_cts", {"orthogonalizer": "qr"}, "orthogonalizer"),
        ("tsv_m", {"scaling": float("nan")}, "scaling"),
        ("tsv_m_ns", {"ns_steps": 0}, "ns_steps"),
        ("tsv_m_ns", {"ns_steps": 2.5}, "ns_steps"),
        ("tsv_m_ns", {"ns_coefficients": [1.0, 2.0]}, "ns_coefficients"),
        ("boosted_tsv_m", {"beta": 0.0}, "beta"),
        ("boosted_tsv_m", {"beta": 1.2}, "beta"),
        ("boosted_tsv_m", {"energy": "tail"}, "energy"),
        ("lors", {"keep_fraction": 1.2}, "keep_fraction"),
        ("lors", {"rank_fraction": 0.0}, "rank_fraction"),
        ("lors", {"rank": -1}, "rank"),
        ("lors_lowrank", {"rank": 1.5}, "rank"),
        ("lors_sparse", {"keep_fraction": -0.1}, "keep_fraction"),
        ("lors_sparse", {"rank": 3}, "rank"),  # unknown for the sparse half
    ],
)
def test_bad_hyperparameters_name_the_key(name, params, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        get_method(name, params)


# --- the rule for non-matrix tensors


@pytest.mark.parametrize("name", ["iso_c", "iso_cts", "tsv_m", "tsv_m_ns", "boosted_tsv_m"])
def test_non_matrix_subspace_methods_scale_the_mean_or_sum(name):
    taus = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, -4.0])]
    base = torch.zeros(2)
    torch.testing.assert_close(
        get_method(name, {"scaling": 0.5}).merge_tensor(base, taus, VEC), torch.tensor([1.0, -0.5])
    )
    out = get_method(name, {"scaling": 0.5, "non_matrix": "sum"}).merge_tensor(base, taus, VEC)
    torch.testing.assert_close(out, torch.tensor([2.0, -1.0]))
    # a 2-D tensor that is not an attention/MLP matrix (e.g. the token embedding) follows the same rule
    emb = [rand(6, 4, seed=1), rand(6, 4, seed=2)]
    ctx = TensorContext("model.decoder.embed_tokens.weight", False)
    torch.testing.assert_close(get_method(name).merge_tensor(torch.zeros(6, 4), emb, ctx), (emb[0] + emb[1]) / 2)


@pytest.mark.parametrize("name", ["lors", "lors_lowrank", "lors_sparse"])
def test_non_matrix_lors_is_unpruned_task_arithmetic(name):
    taus = [torch.tensor([1.0, 2.0, 0.0]), torch.tensor([3.0, -4.0, 0.5])]
    base = torch.zeros(3)
    torch.testing.assert_close(get_method(name).merge_tensor(base, taus, VEC), torch.tensor([2.0, -1.0, 0.25]))
    torch.testing.assert_close(
        get_method(name, {"scaling": 0.2}).merge_tensor(base, taus, VEC), torch.tensor([0.8, -0.4, 0.1])
    )


# --- Iso-C


def test_iso_c_single_task_is_flat_spectrum_in_the_tasks_directions():
    tau = rand(16, 12, seed=11)
    out = get_method("iso_c", {"scaling": 1.5}).merge_tensor(torch.zeros(16, 12), [tau], MAT)
    sigma_bar = float(torch.linalg.svdvals(tau).mean())
    torch.testing.assert_close(torch.linalg.svdvals(out), torch.full((12,), 1.5 * sigma_bar), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(out, 1.5 * sigma_bar * polar_factor(tau), atol=1e-5, rtol=1e-5)


def test_iso_c_identical_tasks():
    tau = rand(12, 16, seed=12)
    out = get_method("iso_c").merge_tensor(torch.zeros(12, 16), [tau, tau, tau], MAT)
    expected = 3 * float(torch.linalg.svdvals(tau).mean())  # spectrum of 3τ, flattened
    torch.testing.assert_close(torch.linalg.svdvals(out), torch.full((12,), expected), atol=1e-4, rtol=1e-5)


# --- Iso-CTS


def test_iso_cts_sizes():
    assert iso_cts_sizes(512, 10, 0.8) == (412, 10)  # int(409.6) = 409; round(10.3) * 10 = 100
    assert iso_cts_sizes(768, 8, 0.8) == (616, 19)  # int(614.4) = 614; round(19.25) * 8 = 152
    assert iso_cts_sizes(12, 2, 0.5) == (6, 3)
    assert iso_cts_sizes(12, 8, 0.5) == (4, 1)  # round(0.75) = 1
    assert iso_cts_sizes(10, 4, 0.0) == (2, 2)  # round(2.5) = 2 (half to even, as the reference)
    assert iso_cts_sizes(11, 4, 0.0) == (3, 2)  # round(2.75) * 4 = 12 > 11 -> 8
    assert iso_cts_sizes(12, 3, 1.0) == (12, 0)
    for r in range(1, 40):
        for n in range(1, 12):
            for f in (0.0, 0.3, 0.8, 1.0):
                k_c, d = iso_cts_sizes(r, n, f)
                assert k_c + n * d == r and k_c >= 0 and d >= 0


def test_iso_cts_isotropic_value_and_orthogonality():
    taus = tasks(2, (16, 12), seed=20)
    out = get_method("iso_cts", {"common_space_fraction": 0.5, "scaling": 2.0}).merge_tensor(
        torch.zeros(16, 12), taus, MAT
    )
    # r = 12, k_c = 6, d = 3: sigma_bar averages the top-6 values of Σ τ and the top-3 of each residual
    u, s, _ = svd(taus[0] + taus[1])
    u_c = u[:, :6]
    res = [torch.linalg.svdvals(t - u_c @ (u_c.mT @ t))[:3] for t in taus]
    sigma_bar = float(torch.cat([s[:6], *res]).mean())
    torch.testing.assert_close(torch.linalg.svdvals(out), torch.full((12,), 2.0 * sigma_bar), atol=1e-4, rtol=1e-5)


def test_iso_cts_with_full_common_space_is_iso_c():
    taus = tasks(3, (16, 12), seed=30)
    a = get_method("iso_cts", {"common_space_fraction": 1.0}).merge_tensor(torch.zeros(16, 12), taus, MAT)
    b = get_method("iso_c").merge_tensor(torch.zeros(16, 12), taus, MAT)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_iso_cts_newton_schulz_variant_keeps_directions():
    taus = tasks(3, (16, 12), seed=31)
    a = get_method("iso_cts").merge_tensor(torch.zeros(16, 12), taus, MAT)
    b = get_method("iso_cts", {"orthogonalizer": "newton_schulz"}).merge_tensor(torch.zeros(16, 12), taus, MAT)
    cos = float((a * b).sum() / (a.norm() * b.norm()))
    assert cos > 0.9 and not torch.allclose(a, b)


# --- TSV-M family


def test_tsv_m_single_task_full_rank_is_the_task_vector():
    tau = rand(16, 12, seed=40)
    out = get_method("tsv_m", {"scaling": 0.7}).merge_tensor(torch.zeros(16, 12), [tau], MAT)
    torch.testing.assert_close(out, 0.7 * tau, atol=1e-5, rtol=1e-5)


def test_tsv_m_identical_rank_one_tasks_by_hand():
    u = torch.tensor([1.0, 2.0, 2.0, 0.0, 0.0, 0.0]) / 3
    v = torch.tensor([0.0, 3.0, 4.0, 0.0, 0.0]) / 5
    tau = 6.0 * torch.outer(u, v)
    # each task keeps k = 5 // 3 = 1 triplet (6, u, v); U = [u u u] has polar factor [u u u]/√3,
    # likewise V, so Δ = Σ_i (u/√3) 6 (v/√3)ᵀ = 6 u vᵀ = τ
    out = get_method("tsv_m").merge_tensor(torch.zeros(6, 5), [tau, tau, tau], MAT)
    torch.testing.assert_close(out, tau, atol=1e-5, rtol=0)


def test_tsv_m_identical_full_rank_tasks_give_the_rank_k_truncation():
    tau = rand(16, 12, seed=41)
    out = get_method("tsv_m").merge_tensor(torch.zeros(16, 12), [tau, tau], MAT)  # k = 12 // 2 = 6
    torch.testing.assert_close(out, low_rank_approx(tau, 6), atol=1e-4, rtol=1e-4)


def test_tsv_components_layout():
    taus = tasks(5, (16, 12), seed=50)  # k = 12 // 5 = 2
    u, s, v = tsv_components(taus)
    assert u.shape == (16, 10) and s.shape == (10,) and v.shape == (12, 10)
    for i, t in enumerate(taus):
        ui, si, vhi = truncated_svd(t, 2)
        torch.testing.assert_close(s[2 * i : 2 * i + 2], si)
        torch.testing.assert_close(u[:, 2 * i : 2 * i + 2], ui)
        torch.testing.assert_close(v[:, 2 * i : 2 * i + 2], vhi.mT)


def test_tsv_bases_are_orthonormal_and_ns_bases_in_band():
    taus = tasks(5, (16, 12), seed=51)
    u, s, v = tsv_bases(taus)
    torch.testing.assert_close(u.mT @ u, eye(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(v.mT @ v, eye(10), atol=1e-5, rtol=0)
    u_ns, s_ns, v_ns = get_method("tsv_m_ns").bases(taus)
    torch.testing.assert_close(s_ns, s)
    for raw, ortho in ((tsv_components(taus)[0], u_ns), (tsv_components(taus)[2], v_ns)):
        assert float(torch.linalg.svdvals(raw).min() / raw.norm()) >= MUON_BAND_MIN_INPUT
        sv = torch.linalg.svdvals(ortho)
        assert MUON_BAND[0] <= float(sv.min()) and float(sv.max()) <= MUON_BAND[1]
    torch.testing.assert_close(polar_factor(u_ns), u, atol=1e-4, rtol=0)


def test_tsv_m_ns_with_converged_cubic_equals_tsv_m():
    taus = tasks(3, (16, 12), seed=52)
    exact = get_method("tsv_m").merge_tensor(torch.zeros(16, 12), taus, MAT)
    cubic = get_method("tsv_m_ns", {"ns_steps": 60, "ns_coefficients": "cubic"}).merge_tensor(
        torch.zeros(16, 12), taus, MAT
    )
    torch.testing.assert_close(cubic, exact, atol=1e-4, rtol=1e-4)
    muon = get_method("tsv_m_ns").merge_tensor(torch.zeros(16, 12), taus, MAT)
    assert not torch.allclose(muon, exact, atol=1e-3)


def test_boosted_beta_one_is_exactly_tsv_m_ns():
    taus = tasks(4, (16, 12), seed=60)
    a = get_method("boosted_tsv_m", {"beta": 1.0}).merge_tensor(torch.zeros(16, 12), taus, MAT)
    b = get_method("tsv_m_ns").merge_tensor(torch.zeros(16, 12), taus, MAT)
    assert torch.equal(a, b)


def test_boosted_spectrum_per_task():
    taus = tasks(2, (16, 12), seed=61)  # k = 6
    _, s_kept, _ = get_method("boosted_tsv_m", {"beta": 0.5}).bases(taus)
    _, s_full, _ = get_method("boosted_tsv_m", {"beta": 0.5, "energy": "full"}).bases(taus)
    for i, t in enumerate(taus):
        sigma = torch.linalg.svdvals(t)
        torch.testing.assert_close(s_kept[6 * i : 6 * i + 6], boost_spectrum(sigma[:6], 0.5))
        torch.testing.assert_close(s_full[6 * i : 6 * i + 6], boost_spectrum(sigma, 0.5)[:6])
        assert bool((s_kept[6 * i : 6 * i + 6] >= sigma[:6] - 1e-6).all())
    assert float(s_kept.sum()) > float(sum(torch.linalg.svdvals(t)[:6].sum() for t in taus))


# --- LoRS family


def test_lors_rank_rule():
    assert lors_rank((768, 768), 0.01) == 7  # the authors' int(768 * 0.01)
    assert lors_rank((3072, 768), 0.01) == 7
    assert lors_rank((512, 2048), 0.01) == 5  # Whisper base
    assert lors_rank((16, 12), 0.01) == 1  # floor 0 -> minimum 1
    assert lors_rank((16, 12), 0.01, rank=4) == 4
    assert lors_rank((16, 12), 0.01, rank=40) == 12


def test_lors_keep_everything_single_task_is_scaled_task_vector():
    tau = rand(16, 12, seed=70)
    out = get_method("lors", {"keep_fraction": 1.0, "scaling": 0.5}).merge_tensor(torch.zeros(16, 12), [tau], MAT)
    assert torch.equal(out, 0.5 * tau)
    out = get_method("lors", {"keep_fraction": 1.0}).merge_tensor(torch.zeros(16, 12), [tau], MAT)
    assert torch.equal(out, tau)  # scaling None -> 1/N = 1


def test_lors_hand_example_two_tasks():
    tau1 = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -2.0, 0.0]])
    tau2 = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    base = torch.zeros(3, 3)
    # r = max(1, int(0.01 * 3)) = 1, k = int(9 * 0.2) = 1: τ1' = [[4,0,0],[0,0,0],[0,-2,0]], τ2' = τ2; λ = 1/2
    out = get_method("lors").merge_tensor(base, [tau1, tau2], MAT)
    torch.testing.assert_close(out, torch.tensor([[2.0, 0, 0], [0, 0, 0], [0, -1.0, 2.5]]), atol=1e-6, rtol=0)
    low = get_method("lors_lowrank").merge_tensor(base, [tau1, tau2], MAT)
    torch.testing.assert_close(low, torch.tensor([[2.0, 0, 0], [0, 0, 0], [0, 0, 2.5]]), atol=1e-6, rtol=0)
    sparse = get_method("lors_sparse", {"scaling": 1.0}).merge_tensor(base, [tau1, tau2], MAT)
    torch.testing.assert_close(sparse, torch.tensor([[4.0, 0, 0], [0, 0, 0], [0, 0, 5.0]]))


def test_lors_prunes_each_task_to_rank_plus_sparse():
    tau = rand(16, 12, seed=71)
    method = get_method("lors", {"rank": 3, "scaling": 1.0})
    pruned = method.merge_tensor(torch.zeros(16, 12), [tau], MAT)
    low, sparse = lowrank_sparse_split(tau, 3, 0.2)
    assert int(torch.linalg.matrix_rank(low)) == 3
    assert int(torch.count_nonzero(sparse)) == int(192 * 0.2)
    torch.testing.assert_close(pruned, low + sparse)
    lowrank = get_method("lors_lowrank", {"rank": 3, "scaling": 1.0}).merge_tensor(torch.zeros(16, 12), [tau], MAT)
    assert int(torch.linalg.matrix_rank(lowrank)) == 3
    sparse_only = get_method("lors_sparse", {"scaling": 1.0}).merge_tensor(torch.zeros(16, 12), [tau], MAT)
    assert int(torch.count_nonzero(sparse_only)) == 38
    torch.testing.assert_close(sparse_only, magnitude_prune(tau, 0.2))  # prunes τ itself, not a residual


# --- streaming protocol (engine): chunked output equals the in-memory merge


class _SmallChunks(InMemorySource):
    def chunks(self):
        return [slice(a, min(a + 3, self.shape[0])) for a in range(0, self.shape[0], 3)]


@pytest.mark.parametrize("name", MINE)
@pytest.mark.parametrize("ctx", [MAT, TensorContext("model.decoder.embed_tokens.weight", False)])
def test_merge_stream_matches_merge_tensor(name, ctx):
    method = get_method(name)
    taus = tasks(3, (10, 8), seed=80)
    base = rand(10, 8, seed=90)
    whole = method.merge_tensor(base, taus, ctx)
    parts = list(method.merge_stream(_SmallChunks(ctx.key, base, taus), ctx))
    assert [p.shape[0] for p in parts] == [3, 3, 3, 1]
    assert torch.equal(torch.cat(parts, 0), whole)


@pytest.mark.parametrize("name", ["lors", "lors_lowrank", "lors_sparse"])
def test_lors_resolved_scaling_is_one_over_n(name):
    m = get_method(name)
    assert m.hparams["scaling"] is None and m.resolved_hparams(5)["scaling"] == pytest.approx(0.2)
    assert get_method(name, {"scaling": 0.4}).resolved_hparams(5)["scaling"] == 0.4
    ties = get_method("ties")
    assert ties.resolved_hparams(5) == ties.hparams  # nothing N-dependent


def test_every_method_module_registers_a_labelled_method():
    from speechmerge.merging import methods
    from speechmerge.merging.base import MergeMethod, register

    registered_modules = {cls.__module__.rsplit(".", 1)[1] for cls in REGISTRY.values()}
    assert set(methods.MODULES) == registered_modules  # found by pkgutil, nothing listed by hand
    for name, cls in REGISTRY.items():
        assert cls.label and cls.reference_url.startswith("https://"), name

    class Unlabelled(MergeMethod):
        name = "unlabelled_test_method"
        reference_url = "https://example.org"

    with pytest.raises(ValueError, match="Unlabelled has no label"):
        register(Unlabelled)
    assert "unlabelled_test_method" not in REGISTRY


@pytest.mark.parametrize("fail_on", [(torch.float32,), (torch.float32, torch.float64)])
def test_svd_falls_back_when_lapack_does_not_converge(monkeypatch, fail_on):
    """gesdd can fail to converge (stacked orthonormal bases): retry in float64, then via eigh."""
    from speechmerge.merging import linalg

    real = torch.linalg.svd

    def flaky(m, *args, **kwargs):
        if m.dtype in fail_on:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return real(m, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    g = torch.Generator().manual_seed(0)
    for shape in [(12, 5), (5, 12)]:
        m = torch.randn(*shape, generator=g)
        m[:, 0] = 0 if shape[0] > shape[1] else m[:, 0]  # a zero singular value on the tall one
        u, s, vh = linalg.svd(m)
        assert u.dtype == s.dtype == vh.dtype == torch.float32
        assert torch.allclose(u @ torch.diag(s) @ vh, m, atol=1e-5)
        assert torch.allclose(u.mT @ u, torch.eye(5), atol=1e-5) and torch.allclose(vh @ vh.mT, torch.eye(5), atol=1e-5)
        assert torch.all(s[:-1] >= s[1:])
        assert torch.allclose(s, real(m.double(), full_matrices=False)[1].float(), atol=1e-5)
