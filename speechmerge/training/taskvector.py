"""Task vectors: τ = θ_model − θ_base for every tensor, stored as float32 safetensors.

Tensors are read one at a time through ``safetensors.safe_open`` (memory holds the output
dict plus two tensors, not two full models). Keys and shapes of the two weight files must
match exactly and every value must be finite; otherwise the error names the tensor (and the
file). The file is byte-reproducible (fixed tensor and metadata order). Metadata (string -> string): ``format``
= "pt", ``kind`` = "task_vector", ``job``, ``experiment``, plus every entry of ``metadata``
(non-strings JSON-encoded), e.g. data, steps, seed, provenance.

Models are saved with PEFT adapters already merged (see ``trainer``), so a model dir's
``model.safetensors`` is all that is needed; ``materialise_adapter`` is not required.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import torch


def weights_file(path: str | os.PathLike) -> Path:
    """A model dir's ``model.safetensors``, or the given safetensors file itself."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.exists():
        raise FileNotFoundError(f"weights not found: {p}")
    if p.suffix != ".safetensors":
        raise ValueError(f"{p}: weights must be a .safetensors file (no pickle)")
    return p


def _metadata_strings(metadata: Mapping | None) -> dict[str, str]:
    out = {}
    for k, v in (metadata or {}).items():
        out[str(k)] = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return out


def task_vector(model_weights, base_weights, out_path, metadata: Mapping | None = None) -> dict:
    """Write τ = θ_model − θ_base (float32, every tensor of the model) to ``out_path``.

    ``model_weights`` / ``base_weights``: a model dir or a ``.safetensors`` file. Returns a
    summary ``{"tensors", "parameters", "l2_norm"}``.
    """
    from safetensors import safe_open

    from speechmerge.merging.safetensors_io import write_safetensors

    mpath, bpath = weights_file(model_weights), weights_file(base_weights)
    out: dict[str, torch.Tensor] = {}
    sq = 0.0
    with safe_open(str(mpath), framework="pt") as fm, safe_open(str(bpath), framework="pt") as fb:
        mkeys, bkeys = set(fm.keys()), set(fb.keys())
        if mkeys != bkeys:
            missing, extra = sorted(bkeys - mkeys), sorted(mkeys - bkeys)
            raise KeyError(
                f"task vector {mpath} vs base {bpath}: tensor names differ; "
                f"missing in model: {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                f"not in base: {extra[:5]}{'...' if len(extra) > 5 else ''}"
            )
        for key in sorted(mkeys):
            a = fm.get_tensor(key).to(torch.float32)
            b = fb.get_tensor(key).to(torch.float32)
            for t, path in ((a, mpath), (b, bpath)):
                if not bool(torch.isfinite(t).all()):
                    raise ValueError(f"task vector: non-finite values (NaN or Inf) in tensor {key!r} of {path}")
            if a.shape != b.shape:
                raise ValueError(
                    f"task vector: tensor {key} has shape {tuple(a.shape)} in {mpath} "
                    f"but {tuple(b.shape)} in base {bpath}"
                )
            d = (a - b).contiguous()
            sq += float(torch.sum(d.double() ** 2))
            out[key] = d
    meta = {"format": "pt", "kind": "task_vector", **_metadata_strings(metadata)}
    write_safetensors(out_path, out, meta)  # byte-reproducible, atomic
    return {"tensors": len(out), "parameters": sum(t.numel() for t in out.values()), "l2_norm": sq**0.5}


def apply_task_vector(base_weights, tv_path, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """θ_base + scale · τ as a state dict (float32; tests and quick checks)."""
    from safetensors import safe_open

    bpath = weights_file(base_weights)
    out = {}
    with safe_open(str(bpath), framework="pt") as fb, safe_open(str(tv_path), framework="pt") as ft:
        if set(fb.keys()) != set(ft.keys()):
            diff = sorted(set(fb.keys()) ^ set(ft.keys()))
            raise KeyError(f"task vector {tv_path} and base {bpath} differ in tensors, e.g. {diff[:5]}")
        for key in fb.keys():
            b, t = fb.get_tensor(key).to(torch.float32), ft.get_tensor(key)
            if b.shape != t.shape:
                raise ValueError(f"tensor {key}: base shape {tuple(b.shape)} vs task vector {tuple(t.shape)}")
            out[key] = b + scale * t
    return out


def read_metadata(tv_path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(tv_path), framework="pt") as f:
        return dict(f.metadata() or {})
