"""The CUDA path, checked as far as a CPU allows: every tensor a training step, a dev
evaluation, greedy and beam decoding and a merge touch is created on, or moved to, the device of
the model (``tests/placement.py``: ``meta`` as the default device, and an operator that mixes two
devices fails). A stray ``torch.zeros(n)`` without ``device=`` fails the check (shown below).
Every trainable parameter of every PEFT method follows ``model.to(...)``. Tests that need a GPU
are marked ``gpu`` and skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from placement import MixedDevices, placement_check
from test_training import DEV, UTTERANCES, _record, make_spec

from speechmerge.data.io import write_split
from speechmerge.training import batching
from speechmerge.training.peft import build_method, peft_method_names
from speechmerge.training.spec import TrainSpec
from speechmerge.training.trainer import Trainer

PEFT = {
    "full": {},
    "bitfit": {},
    "lora": {"r": 2},
    "adalora": {"init_r": 4, "target_r": 2, "tinit": 0, "tfinal": 1, "deltaT": 1},
    "s2lora": {"r": 4},
}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from speechmerge.models import import_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    import_model("random:tiny", out, max_seconds=2, progress=False)
    return out


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_split([_record(*u, "train") for u in UTTERANCES], d / "train.parquet")
    write_split([_record(*u, "dev") for u in DEV], d / "dev.parquet")
    return d / "train.parquet", d / "dev.parquet"


def _trainer(tiny_model, splits, tmp_path, method, **kw):
    spec = TrainSpec.from_dict(
        make_spec(method=method, peft=PEFT[method], steps=4, checkpoint_dir=str(tmp_path / "ckpt"), **kw)
    )
    return Trainer(spec, tiny_model, [splits[0]], [splits[1]], progress=False)


def test_every_peft_method_is_covered():
    assert sorted(PEFT) == sorted(peft_method_names())


@pytest.mark.parametrize("method", sorted(PEFT))
def test_a_training_step_and_a_dev_evaluation_keep_to_the_models_device(tiny_model, splits, tmp_path, method):
    trainer = _trainer(tiny_model, splits, tmp_path, method)
    try:
        with placement_check():
            row = trainer.train_step()
            trainer.train_step()  # AdaLoRA budgets from its second step (tinit 0, deltaT 1)
            loss, acc = trainer.evaluate()
        assert np.isfinite(row["loss"]) and np.isfinite(loss) and 0 <= acc <= 1
    finally:
        trainer.close()


def test_training_with_dataloader_workers_takes_the_same_batches(tiny_model, splits, tmp_path):
    a = _trainer(tiny_model, splits, tmp_path / "a", "full")
    b = _trainer(tiny_model, splits, tmp_path / "b", "full", dataloader_workers=1)
    try:
        a.run()
        b.run()
        assert [r["loss"] for r in a.rows] == [r["loss"] for r in b.rows]
        assert all(torch.equal(p, b.params[n]) for n, p in a.params.items())
    finally:
        a.close()
        b.close()


def test_a_stray_tensor_without_device_fails_the_check(tiny_model, splits, tmp_path, monkeypatch):
    """The check catches what it is for: a tensor made without ``device=`` inside the step."""
    from speechmerge.training import trainer as T

    real = T.target_loss

    def stray(whisper, batch, accuracy=True):
        labels = batch["labels"]
        batch = {**batch, "labels": labels + torch.zeros(labels.shape[1], dtype=labels.dtype)}  # no device=
        return real(whisper, batch, accuracy)

    trainer = _trainer(tiny_model, splits, tmp_path, "full")
    try:
        trainer.train_step()  # outside the check the stray tensor is on the CPU, and nothing is noticed
        monkeypatch.setattr(T, "target_loss", stray)
        with pytest.raises(MixedDevices, match=r"aten\.add\.Tensor: tensors on \['cpu', 'meta'\]"):
            with placement_check():
                trainer.train_step()
    finally:
        trainer.close()


@pytest.mark.parametrize("method", sorted(PEFT))
def test_every_trainable_parameter_follows_the_model(tiny_model, method):
    from speechmerge.models import load_whisper

    model, _ = load_whisper(tiny_model)
    m = build_method(method, model, PEFT[method], total_steps=10)
    m.whisper.to("meta")
    left = [n for n, p in m.named_trainable().items() if not p.is_meta]
    assert not left, f"{method}: {left[:5]} stayed on the CPU"


@pytest.mark.parametrize("beam_size", [1, 2])
def test_decoding_keeps_to_the_models_device(tiny_model, beam_size):
    from speechmerge.evaluation import decode as D
    from speechmerge.models.inference import load_decoder

    model, processor = load_decoder(tiny_model, beam_size=beam_size)
    if beam_size > 1:
        # transformers' Whisper generate keeps its own bookkeeping (seek positions, frame counts)
        # in host tensors made without a device, on a GPU too: inside it, only the one-device-per-
        # operator half of the check applies
        generate = model.generate

        def host_bookkeeping(*args, **kwargs):
            with torch.device("cpu"):
                return generate(*args, **kwargs)

        model.generate = host_bookkeeping
    waves = [np.full(16000 * (1 + i) // 2, 0.02 * (i + 1), np.float32) for i in range(3)]
    with placement_check():
        res = D.decode_tasks(
            model, processor, waves, ["de"] * 3, [D.TASKS] * 3, beam_size=beam_size, max_new_tokens=4, progress=False
        )
    assert all(len(h) == 3 and None not in h for h in res.by_task.values())


def test_every_merge_method_keeps_to_its_inputs_device():
    from speechmerge.merging import REGISTRY, methods  # noqa: F401  (methods: registers every one)
    from speechmerge.merging.base import TensorContext, get_method
    from speechmerge.merging.engine import merged_deltas
    from speechmerge.merging.streaming import InMemorySource

    g = torch.Generator().manual_seed(0)
    base = torch.randn(24, 16, generator=g)
    deltas = [0.01 * torch.randn(24, 16, generator=g) for _ in range(3)]
    ctx = TensorContext("model.decoder.layers.0.fc1.weight", True, 0)
    for name in sorted(REGISTRY):
        with placement_check():
            out = torch.cat(
                [d for _, d in merged_deltas(get_method(name, {}), InMemorySource(ctx.key, base, deltas), ctx)]
            )
        assert out.shape == (24, 16) and torch.isfinite(out).all(), name


@cuda
@pytest.mark.gpu
def test_gpu_and_cpu_merges_agree():
    """SVD / Newton-Schulz merges on the GPU equal the CPU's within 1e-4 relative (Frobenius)."""
    from speechmerge.merging import REGISTRY
    from speechmerge.merging.base import TensorContext, get_method
    from speechmerge.merging.engine import merged_deltas, on_device
    from speechmerge.merging.streaming import InMemorySource

    g = torch.Generator().manual_seed(0)
    base = torch.randn(512, 384, generator=g)
    deltas = [0.01 * torch.randn(512, 384, generator=g) for _ in range(10)]

    def Source():
        return InMemorySource("model.encoder.layers.0.fc1.weight", base, deltas)

    for name in sorted(n for n, c in REGISTRY.items() if c.device_capable):
        ctx = TensorContext("model.encoder.layers.0.fc1.weight", True, 0)
        cpu = next(merged_deltas(get_method(name, {}), Source(), ctx))[1]
        with on_device("cuda"):
            gpu = next(merged_deltas(get_method(name, {}), Source(), ctx))[1]
        rel = float((gpu - cpu).norm() / cpu.norm().clamp_min(1e-12))
        assert rel < 1e-4, (name, rel)


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("method", ["full", "lora", "s2lora"])
def test_a_training_step_on_the_gpu(tiny_model, splits, tmp_path, method):
    trainer = _trainer(tiny_model, splits, tmp_path, method, device="cuda", precision="bfloat16")
    try:
        row = trainer.train_step()
        assert np.isfinite(row["loss"]) and all(p.is_cuda for p in trainer.params.values())
        assert trainer.best_state is None or all(not t.is_cuda for t in trainer.best_state.values())
    finally:
        trainer.close()


def test_collated_batches_live_in_host_memory(splits):
    feats = torch.zeros(4, 2, 3)
    items = [batching.Item(i, f"u{i}", "de", "transcribe", (1, 2), (2, 3)) for i in range(2)]
    with placement_check():
        batch = batching.collate(items, feats, 0)
    assert all(t.device.type == "cpu" for t in batch.values())
