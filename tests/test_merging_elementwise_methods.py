"""Parameter-space and task-vector-space merge methods: closed forms, hand-computed examples,
invariants, determinism and hyperparameter checks. Tiny tensors only."""

from __future__ import annotations

import math

import pytest
import torch

from speechmerge.merging import TensorContext, get_method, streaming

MATRIX_KEY = "model.encoder.layers.0.fc1.weight"
BIAS_KEY = "model.encoder.layers.0.fc1.bias"
METHODS = ["soup", "model_stock", "karcher", "multislerp", "task_arithmetic", "ties", "dare_linear",
           "dare_ties", "pcb", "sce"]  # fmt: skip


def merge(name: str, deltas, base=None, key: str = BIAS_KEY, seed: int = 0, **hp) -> torch.Tensor:
    deltas = [torch.as_tensor(d, dtype=torch.float32) for d in deltas]
    base = torch.zeros_like(deltas[0]) if base is None else torch.as_tensor(base, dtype=torch.float32)
    ctx = TensorContext(key, is_matrix=key == MATRIX_KEY, seed=seed)
    return get_method(name, hp).merge_tensor(base, deltas, ctx)


def close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=torch.float32), atol=atol, rtol=1e-5)


# --- closed forms --------------------------------------------------------------------------


@pytest.fixture
def tau() -> torch.Tensor:
    return torch.tensor([[0.5, -1.0, 0.25], [2.0, 0.0, -0.75]])


@pytest.mark.parametrize("name", ["soup", "model_stock", "karcher", "multislerp"])
def test_identical_experts_give_the_expert(name, tau):
    base = torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.5, 3.0]])
    for n in (1, 3):
        close(merge(name, [tau] * n, base=base), tau, atol=1e-5)


def test_task_arithmetic_closed_forms(tau):
    close(merge("task_arithmetic", [tau], scaling=0.3), 0.3 * tau)
    close(merge("task_arithmetic", [tau, tau, tau], scaling=0.5), 1.5 * tau)
    close(merge("task_arithmetic", [[1.0, 2.0], [3.0, -2.0]], scaling=0.5), [2.0, 0.0])


def test_ties_identical_experts_without_trimming_is_scaled_expert(tau):
    close(merge("ties", [tau, tau], keep_fraction=1.0, scaling=0.7), 0.7 * tau)
    close(merge("ties", [tau], keep_fraction=1.0), tau)


def test_dare_without_dropping_is_task_arithmetic_and_ties(tau):
    other = torch.tensor([[-0.5, -3.0, 1.0], [1.0, 1.0, 0.75]])
    close(merge("dare_linear", [tau, other], drop_rate=0.0, scaling=0.3), 0.3 * (tau + other))
    close(merge("dare_ties", [tau, other], drop_rate=0.0), merge("ties", [tau, other], keep_fraction=1.0))


def test_single_expert(tau):
    close(merge("soup", [tau]), tau)
    close(merge("sce", [tau], keep_fraction=1.0), tau)
    close(merge("dare_linear", [tau], drop_rate=0.0, scaling=1.0), tau)


# --- hand-computed examples ----------------------------------------------------------------


def test_soup_weights_are_normalised():
    close(merge("soup", [[1.0, 2.0], [3.0, -2.0]]), [2.0, 0.0])
    close(merge("soup", [[1.0, 2.0], [3.0, -2.0]], weights=[3, 1]), [1.5, 1.0])  # 0.75 / 0.25


def test_model_stock_hand_computed():
    # cos(τ1, τ2) = 1/√2, N = 2: t = 2c / (1 + c) = 2(√2 − 1); mean τ = [1, 0.5]
    t = 2 * (math.sqrt(2) - 1)
    close(merge("model_stock", [[1.0, 0.0], [1.0, 1.0]]), [t, 0.5 * t])
    # orthogonal task vectors: cos = 0 -> t = 0 -> the base
    close(merge("model_stock", [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]), [0.0, 0.0, 0.0])
    # opposite task vectors: 1 + (N-1) cos = 0 -> t = 0
    close(merge("model_stock", [[1.0, 0.0], [-1.0, 0.0]]), [0.0, 0.0])
    # filter-wise: row 0 as above, row 1 orthogonal
    out = merge("model_stock", [[[1.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 1.0]]], key=MATRIX_KEY, filter_wise=True)
    close(out, [[t, 0.5 * t], [0.0, 0.0]])


def test_karcher_hand_computed():
    s = math.sqrt(0.5)
    # base 0: θ1 = [1,0], θ2 = [0,1] -> geodesic midpoint, norm 1
    close(merge("karcher", [[1.0, 0.0], [0.0, 1.0]]), [s, s])
    # norms 2 and 1 -> same direction, mean norm 1.5; base [1,1] subtracted from the result
    close(merge("karcher", [[1.0, -1.0], [-1.0, 0.0]], base=[1.0, 1.0]), [1.5 * s - 1, 1.5 * s - 1], atol=1e-5)
    # weights 3:1 -> angle 0.25 · π/2 = π/8 (weighted geodesic mean), norm 0.75·2 + 0.25·1
    c, sn = math.cos(math.pi / 8), math.sin(math.pi / 8)
    close(merge("karcher", [[2.0, 0.0], [0.0, 1.0]], weights=[3, 1]), [1.75 * c, 1.75 * sn], atol=1e-5)


def test_multislerp_hand_computed():
    s = math.sqrt(0.5)
    # unit directions [1,0], [0,1]; mean direction [s, s]; mean norm (1 + 2) / 2
    close(merge("multislerp", [[1.0, 0.0], [0.0, 2.0]]), [1.5 * s, 1.5 * s])
    # weights 3:1 -> direction [3,1]/√10 (chordal, unlike Karcher), norm 0.75·1 + 0.25·2
    close(
        merge("multislerp", [[1.0, 0.0], [0.0, 2.0]], weights=[3, 1]), [1.25 * 3 / math.sqrt(10), 1.25 / math.sqrt(10)]
    )
    # cancelling and zero task vectors fall back to the weighted sum
    close(merge("multislerp", [[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]]), [0.0, 0.0])


def test_ties_hand_computed():
    t1 = [3.0, -1.0, 0.5, 2.0, -4.0]
    t2 = [-2.0, 5.0, 0.1, 1.0, -3.0]
    t3 = [1.0, -6.0, 2.0, -0.5, 2.5]
    # top-2 of each: [3,0,0,0,-4], [0,5,0,0,-3], [0,-6,0,0,2.5]; sums [3,-1,0,0,-4.5]
    close(merge("ties", [t1, t2, t3], keep_fraction=0.4), [3.0, -6.0, 0.0, 0.0, -3.5])
    close(merge("ties", [t1, t2, t3], keep_fraction=0.4, scaling=0.5), [1.5, -3.0, 0.0, 0.0, -1.75])


def test_ties_zero_sum_takes_the_tensor_majority_sign():
    # sums [0, 5]: entry 0 undecided, majority of elected signs is + -> only +1 survives
    close(merge("ties", [[1.0, 2.0], [-1.0, 3.0]], keep_fraction=1.0), [1.0, 2.5])
    # sums [0, -3, -4]: majority - -> entry 0 keeps -1
    close(merge("ties", [[1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]], keep_fraction=1.0), [-1.0, -1.5, -2.0])


def test_dare_ties_hand_computed():
    t1, t2 = [1.0, -2.0, 3.0, 1.0], [-3.0, -1.0, 1.0, -1.0]
    # sums [-2, -3, 4, 0] -> signs [-, -, +, +(zero)]
    close(merge("dare_ties", [t1, t2], drop_rate=0.0), [-3.0, -1.5, 2.0, 1.0])
    # weights 3:1 elect on Σ w τ = [0, -7, 10, 2] -> [+, -, +, +]; weighted disjoint means:
    # 3·1/3 = 1, (3·-2 + 1·-1)/4 = -1.75, (3·3 + 1·1)/4 = 2.5, 3·1/3 = 1
    close(merge("dare_ties", [t1, t2], drop_rate=0.0, weights=[3, 1]), [1.0, -1.75, 2.5, 1.0])


def test_pcb_worked_example():
    # d = 4, clamp 1e-4: lo = sorted|τ|[0], hi = sorted|τ|[2] -> 0.4 is clipped to 0.3 in both.
    # keep_fraction 0.75: q = sorted(β)[1]; the β of (τ1: entries 1, 3) and (τ2: entries 2, 3) exceed it.
    t1 = [0.1, -0.2, 0.3, 0.4]
    t2 = [0.2, 0.1, -0.4, 0.3]
    close(merge("pcb", [t1, t2], keep_fraction=0.75), [0.0, -0.2, -0.3, 0.3])
    close(merge("pcb", [t1, t2], keep_fraction=0.75, scaling=2.0), [0.0, -0.4, -0.6, 0.6])


def pcb_reference(taus: torch.Tensor, keep: float, c: float) -> torch.Tensor:
    """Direct full-tensor transcription of PCB's formulas (flattened N × d), for comparison."""
    n, d = taus.shape
    srt = taus.abs().sort(1).values
    lo, hi = srt[:, int(d * c)][:, None], srt[:, int(d * (1 - c) - 1)][:, None]
    a = torch.minimum(torch.maximum(taus.abs(), lo), hi)
    intra = torch.exp(n * ((a - lo) / (hi - lo)) ** 2)
    beta = intra * torch.tanh(taus * taus.sum(0))
    q = beta.sort(1).values[:, int(d * (1 - keep))][:, None]
    top = beta.max(1, keepdim=True).values
    scale = (torch.maximum(beta, q) - q) / (top - q)
    return (torch.sign(taus) * a * scale).sum(0) / scale.sum(0).clamp(min=1e-12)


def test_pcb_matches_full_tensor_formulas():
    g = torch.Generator().manual_seed(1)
    taus = torch.randn(3, 40, 5, generator=g) * 0.1
    out = merge("pcb", list(taus), key=MATRIX_KEY, keep_fraction=0.2, clamp_ratio=0.05)
    close(out.reshape(-1), pcb_reference(taus.reshape(3, -1), 0.2, 0.05), atol=1e-5)


def test_sce_hand_computed():
    t1, t2, t3 = [1.0, 0.0, 2.0, -1.0], [3.0, 0.0, -2.0, 1.0], [1.0, 3.0, 2.0, 0.0]
    # no selection: weights ∝ Σ τ² = 6, 14, 14; erase minority signs; weighted mean
    close(merge("sce", [t1, t2, t3], keep_fraction=1.0), [62 / 34, 3.0, 2.0, 1.0])
    # variances [8/9, 2, 32/9, 2/3]: keep the top int(0.5 · 4) = 2 (entries 1, 2); weights ∝ 4, 4, 13
    close(merge("sce", [t1, t2, t3], keep_fraction=0.5), [0.0, 3.0, 2.0, 0.0])
    # identical experts: no variance anywhere -> nothing to select by, keep all
    close(merge("sce", [t1, t1], keep_fraction=0.1), t1)


# --- invariants ----------------------------------------------------------------------------


def test_ties_merged_entries_have_the_elected_sign():
    g = torch.Generator().manual_seed(0)
    taus = [torch.randn(30, 20, generator=g) for _ in range(4)]
    out = merge("ties", taus, key=MATRIX_KEY, keep_fraction=0.3)
    k = int(600 * 0.3)
    trimmed = []
    for t in taus:
        keep = torch.zeros(600, dtype=torch.bool)
        keep[t.abs().reshape(-1).topk(k).indices] = True
        trimmed.append(t * keep.reshape(t.shape))
    elected = torch.sign(sum(trimmed))
    nz = out != 0
    assert nz.sum() > 100
    assert torch.equal(torch.sign(out[nz]), elected[nz])
    # and every entry is the mean of the agreeing trimmed values
    agree = torch.stack([(torch.sign(t) == elected) & (t != 0) for t in trimmed])
    expected = (torch.stack(trimmed) * agree).sum(0) / agree.sum(0).clamp(min=1)
    close(out, expected, atol=1e-6)


def test_dare_drop_fraction_and_rescale():
    tau = torch.ones(100_000)
    out = merge("dare_linear", [tau], drop_rate=0.9, scaling=1.0)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.1) < 0.005
    assert torch.allclose(out[kept], torch.full_like(out[kept], 10.0))
    assert abs(out.mean().item() - 1.0) < 0.05
    no_rescale = merge("dare_linear", [tau], drop_rate=0.9, scaling=1.0, rescale=False)
    assert set(no_rescale.unique().tolist()) == {0.0, 1.0}


def test_dare_is_unbiased_over_seeds():
    tau = torch.tensor([1.0, -2.0, 3.0])
    outs = torch.stack([merge("dare_linear", [tau], drop_rate=0.5, scaling=1.0, seed=s) for s in range(2000)])
    close(outs.mean(0), tau, atol=0.25)
    assert ((outs == 0).float().mean() - 0.5).abs() < 0.05


def test_dare_determinism():
    g = torch.Generator().manual_seed(3)
    taus = [torch.randn(50, generator=g) for _ in range(3)]
    for name in ("dare_linear", "dare_ties"):
        a = merge(name, taus, seed=7, drop_rate=0.5)
        assert torch.equal(a, merge(name, taus, seed=7, drop_rate=0.5))
        assert not torch.equal(a, merge(name, taus, seed=8, drop_rate=0.5))
        assert not torch.equal(a, merge(name, taus, seed=7, drop_rate=0.5, key="other.bias"))


def test_matrices_only_skips_sparsification_outside_matrices():
    tau = torch.arange(1.0, 11.0)
    close(merge("ties", [tau], keep_fraction=0.2, matrices_only=True, key=BIAS_KEY), tau)
    out = merge("ties", [tau.reshape(2, 5)], keep_fraction=0.2, matrices_only=True, key=MATRIX_KEY)
    close(out.reshape(-1), [0.0] * 8 + [9.0, 10.0])
    close(merge("dare_linear", [tau], scaling=1.0, matrices_only=True, key=BIAS_KEY), tau)


@pytest.mark.parametrize("name", [m for m in METHODS if m not in ("dare_linear", "dare_ties")])
def test_chunked_equals_whole(monkeypatch, name):
    """The chunked protocol gives the same result as one chunk (up to float rounding)."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(13, 5, generator=g)
    taus = [torch.randn(13, 5, generator=g) * 0.1 for _ in range(3)]
    whole = merge(name, taus, base=base, key=MATRIX_KEY)
    monkeypatch.setattr(streaming, "CHUNK_ELEMS", 7)  # 1 row per chunk
    assert len(streaming.row_chunks((13, 5))) == 13
    chunked = merge(name, taus, base=base, key=MATRIX_KEY)
    close(chunked, whole, atol=1e-5)


@pytest.mark.parametrize("name", METHODS)
def test_scalar_and_output_shape(name):
    out = merge(name, [torch.tensor(0.5), torch.tensor(0.25)], base=torch.tensor(1.0))
    assert out.shape == () and torch.isfinite(out)


# --- hyperparameter checks -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, key, value",
    [
        ("soup", "weights", [1, -1]),
        ("soup", "weights", "uniform"),
        ("task_arithmetic", "scaling", "big"),
        ("ties", "keep_fraction", 0.0),
        ("ties", "keep_fraction", 1.5),
        ("ties", "matrices_only", "yes"),
        ("dare_linear", "drop_rate", 1.0),
        ("dare_ties", "weights", [1, 0]),
        ("model_stock", "filter_wise", 1),
        ("karcher", "max_iter", 2.5),
        ("karcher", "tol", 0),
        ("multislerp", "eps", -1),
        ("pcb", "clamp_ratio", 0.6),
        ("pcb", "keep_fraction", -0.1),
        ("sce", "keep_fraction", 2),
    ],
)
def test_bad_hyperparameter_names_the_key(name, key, value):
    with pytest.raises(ValueError, match=repr(key)):
        get_method(name, {key: value})


def test_unknown_hyperparameter_and_weight_count():
    with pytest.raises(ValueError, match="density"):
        get_method("ties", {"density": 0.2})
    with pytest.raises(ValueError, match="'weights' has 3 values but 2 experts"):
        merge("soup", [[1.0], [2.0]], weights=[1, 1, 1])
