"""S2-LoRA: shared factors per weight shape, per-layer coefficients, L1 sparsity, merge."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_whisper import tiny_whisper
from torch import nn

from speechmerge.training.s2lora import S2LoRA, S2LoRALinear


def forward(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, 8, 20, generator=g)
    ids = torch.randint(3, 100, (2, 5), generator=g)
    with torch.no_grad():
        return model(input_features=feats, decoder_input_ids=ids).logits


def test_layers_of_one_shape_share_the_same_factor_tensors():
    model = tiny_whisper()
    s2 = S2LoRA(model, r=3, alpha=6)
    # d=16, ffn=32: enc 4 attn + dec 8 attn (16x16), fc1 x2 (32x16), fc2 x2 (16x32)
    assert len(s2.layers) == 16
    assert sorted(s2.factors.A) == ["16x16", "16x32", "32x16"]
    by_key = {}
    for name, layer in s2.layers.items():
        assert isinstance(model.get_submodule(name), S2LoRALinear)
        by_key.setdefault(layer.key, []).append(layer)
    assert [len(by_key[k]) for k in ("16x16", "32x16", "16x32")] == [12, 2, 2]
    for layers in by_key.values():
        assert all(l.A is layers[0].A and l.B is layers[0].B for l in layers)
        assert len({id(l.coef) for l in layers}) == len(layers)  # coefficients are per layer
    # trainable = shared A,B per shape + r per layer, counted by hand
    n = sum(p.numel() for p in s2.named_trainable().values())
    assert n == 3 * ((16 + 16) + (32 + 16) + (16 + 32)) + 3 * 16 == 432
    # the shared factors are registered once, on the model (so that .to() moves them), not per layer
    names = [n for n, _ in model.named_parameters()]
    shared = sorted(n for n in names if n.startswith("s2lora_factors."))
    assert shared == [f"s2lora_factors.{m}.{k}" for m in "AB" for k in ("16x16", "16x32", "32x16")]
    assert not any(n.rsplit(".", 1)[-1] in ("A", "B") for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(shared) | {n for n in names if n.endswith(".coef")}
    # merged: the plain model again, without the factors
    s2.merge()
    assert not any(n.startswith("s2lora_factors") for n, _ in model.named_parameters())


def test_update_is_zero_at_init_and_scale_is_alpha_over_r():
    model = tiny_whisper()
    before = forward(model)
    s2 = S2LoRA(model, r=4, alpha=2)
    assert torch.equal(forward(model), before)
    layer = next(iter(s2.layers.values()))
    assert layer.scale == 0.5
    assert torch.count_nonzero(layer.delta_weight()) == 0
    assert float(s2.l1_penalty().detach()) == 0.0  # c = 0 everywhere (AdaLoRA's init)
    # the shared factors are random (kaiming-uniform), so the coefficients get a gradient at once
    for key in s2.factors.A:
        for t in (s2.factors.A[key], s2.factors.B[key]):
            bound = 1 / math.sqrt(t.shape[1])
            assert torch.count_nonzero(t) == t.numel() and float(t.detach().abs().max()) <= bound


def test_forward_formula_and_merge_reproduce_the_adapted_model():
    model = tiny_whisper()
    s2 = S2LoRA(model, r=4, alpha=8)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for key in s2.factors.B:
            s2.factors.B[key].copy_(torch.randn(s2.factors.B[key].shape, generator=g) * 0.1)
        for layer in s2.layers.values():
            layer.coef.copy_(torch.randn(4, generator=g))
    # y = W x + b + (alpha/r) B (c * (A x)) for one layer, by hand
    name, layer = next((n, l) for n, l in s2.layers.items() if n.endswith("fc1"))  # has a bias
    x = torch.randn(3, layer.base.in_features, generator=g)
    with torch.no_grad():
        expected = x @ layer.base.weight.T + layer.base.bias + 2.0 * ((x @ layer.A.T) * layer.coef) @ layer.B.T
        assert torch.allclose(layer(x), expected, atol=1e-6)
        dw = 2.0 * layer.B @ torch.diag(layer.coef) @ layer.A
        assert torch.allclose(layer.delta_weight(), dw, atol=1e-6)
    adapted = forward(model)
    merged = s2.merge()
    assert merged is model
    assert not any(isinstance(m, S2LoRALinear) for m in model.modules())
    assert isinstance(model.get_submodule(name), nn.Linear)
    assert torch.allclose(forward(model), adapted, atol=1e-5)
    assert set(model.state_dict()) == set(tiny_whisper().state_dict())


class Toy(nn.Module):
    """Six 16x16 linears named like Whisper's (one shared shape), tanh in between."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"q_proj": nn.Linear(16, 16), "fc2": nn.Linear(16, 16)}) for _ in range(3)
        )

    def forward(self, x):
        for b in self.blocks:
            x = torch.tanh(b["fc2"](torch.tanh(b["q_proj"](x))))
        return x


def _fit(l1_weight, steps=400):
    """Regress a teacher whose weights differ from the student's in the first q_proj only
    (a rank-1 change); return the student's S2-LoRA (not pruned yet)."""
    torch.manual_seed(0)
    student = Toy()
    teacher = Toy()
    teacher.load_state_dict(student.state_dict())
    with torch.no_grad():
        teacher.blocks[0]["q_proj"].weight += torch.outer(torch.randn(16), torch.randn(16)) / 4
    s2 = S2LoRA(student, r=4, alpha=4)
    opt = torch.optim.Adam(list(s2.named_trainable().values()), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 - k / steps)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(32, 16, generator=g)
        with torch.no_grad():
            target = teacher(x)
        loss = torch.mean((student(x) - target) ** 2) + l1_weight * s2.l1_penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return s2


def test_l1_penalty_drives_coefficients_to_sparsity():
    dense = _fit(0.0)
    sparse = _fit(3e-4)
    # without the penalty several layers keep coefficients above the same relative cut
    d = dense.prune(0.1)
    assert d["coefficients"] == 6 * 4 and d["nonzero"] >= 8, d
    assert sum(r > 0 for r in dense.rank_allocation().values()) >= 3
    # with it, all but one coefficient end up (near) zero: relative pruning at 10 % of the largest
    before = {n: layer.coef.detach().clone() for n, layer in sparse.layers.items()}
    s = sparse.prune(0.1)
    assert s["coefficients"] == 6 * 4 and s["cut"] == pytest.approx(0.1 * s["max_abs_coef"])
    assert s["sparsity"] > 0.9, s
    ranks = sparse.rank_allocation()
    assert sum(ranks.values()) == s["nonzero"] and all(0 <= r <= 4 for r in ranks.values())
    # the only layer whose update the teacher needs keeps rank 1 (the teacher's change is rank 1)
    assert ranks == {
        "blocks.0.q_proj": 1,
        **{f"blocks.{i}.{m}": 0 for i in range(3) for m in ("q_proj", "fc2") if (i, m) != (0, "q_proj")},
    }
    # pruned coefficients are exactly zero, the rest untouched
    for name, layer in sparse.layers.items():
        kept = layer.coef != 0
        assert torch.equal(layer.coef[kept], before[name][kept])
        assert torch.all(before[name][~kept].abs() < s["cut"])


def test_bad_rank_and_missing_targets_are_errors():
    with pytest.raises(ValueError, match="rank r"):
        S2LoRA(tiny_whisper(), r=0)
    with pytest.raises(ValueError, match="no nn.Linear named"):
        S2LoRA(tiny_whisper(), r=2, target_modules=["nope"])
