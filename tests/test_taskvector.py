"""Task vectors: τ = θ − θ_base, every tensor, float32, with metadata and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from speechmerge.training.taskvector import apply_task_vector, read_metadata, task_vector


def weights(tmp_path, name, seed, dtype=torch.float32, **override):
    g = torch.Generator().manual_seed(seed)
    sd = {
        "a.weight": torch.randn(4, 3, generator=g),
        "a.bias": torch.randn(4, generator=g),
        "b.weight": torch.randn(2, 2, generator=g),
    }
    sd = {k: v.to(dtype) for k, v in sd.items()}
    sd.update(override)
    path = tmp_path / f"{name}.safetensors"
    save_file(sd, str(path))
    return path


def test_task_vector_of_a_model_and_itself_is_zero(tmp_path):
    m = weights(tmp_path, "m", 0)
    out = tmp_path / "tv.safetensors"
    summary = task_vector(m, m, out, {"job": "expert-de"})
    tv = load_file(str(out))
    assert set(tv) == {"a.weight", "a.bias", "b.weight"}
    assert all(torch.count_nonzero(t) == 0 for t in tv.values())
    assert summary == {"tensors": 3, "parameters": 12 + 4 + 4, "l2_norm": 0.0}


def test_base_plus_tau_is_the_model_and_values_by_hand(tmp_path):
    base, model = weights(tmp_path, "base", 0), weights(tmp_path, "model", 1)
    out = tmp_path / "tv.safetensors"
    meta = {
        "experiment": "multilingual",
        "job": "expert-de",
        "steps": 24,
        "seed": 0,
        "provenance": {"config_hash": "abc"},
    }
    task_vector(model, base, out, meta)
    tv, b, m = load_file(str(out)), load_file(str(base)), load_file(str(model))
    for k in tv:
        assert tv[k].dtype == torch.float32
        assert torch.equal(tv[k], m[k] - b[k])
    rebuilt = apply_task_vector(base, out)
    assert all(torch.allclose(rebuilt[k], m[k], atol=1e-6) for k in m)
    half = apply_task_vector(base, out, scale=0.5)
    assert torch.allclose(half["b.weight"], (b["b.weight"] + m["b.weight"]) / 2, atol=1e-6)
    md = read_metadata(out)
    assert md["job"] == "expert-de" and md["kind"] == "task_vector" and md["steps"] == "24"
    assert json.loads(md["provenance"]) == {"config_hash": "abc"}


def test_half_precision_inputs_give_float32_difference(tmp_path):
    base = weights(tmp_path, "base", 0, dtype=torch.float16)
    model = weights(tmp_path, "model", 1, dtype=torch.bfloat16)
    out = tmp_path / "tv.safetensors"
    task_vector(model, base, out)
    tv, b, m = load_file(str(out)), load_file(str(base)), load_file(str(model))
    assert all(t.dtype == torch.float32 for t in tv.values())
    assert torch.equal(tv["a.bias"], m["a.bias"].float() - b["a.bias"].float())


def test_model_directory_is_accepted(tmp_path):
    d = tmp_path / "modeldir"
    d.mkdir()
    save_file(load_file(str(weights(tmp_path, "x", 2))), str(d / "model.safetensors"))
    task_vector(d, weights(tmp_path, "base", 0), tmp_path / "tv.safetensors")
    assert (tmp_path / "tv.safetensors").exists()


def test_mismatched_keys_and_shapes_name_the_tensor(tmp_path):
    base = weights(tmp_path, "base", 0)
    extra = weights(tmp_path, "extra", 1, **{"c.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match=r"not in base: \['c.weight'\]"):
        task_vector(extra, base, tmp_path / "tv.safetensors")
    shaped = weights(tmp_path, "shaped", 1, **{"b.weight": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match=r"tensor b.weight has shape \(2, 3\)"):
        task_vector(shaped, base, tmp_path / "tv.safetensors")
    assert not (tmp_path / "tv.safetensors").exists()
    assert not list(tmp_path.glob(".tv.safetensors*"))  # nothing half-written
    with pytest.raises(FileNotFoundError, match="nope"):
        task_vector(tmp_path / "nope.safetensors", base, tmp_path / "tv.safetensors")
