"""How much of the experts' task vectors is shared: pairwise cosines from two origins.

For experts θ_1..θ_n fine-tuned from θ₀ (the context-adapted base, or the imported base itself),
``taskvector_cosines`` compares the task vectors taken from the imported base (τ_i = θ_i − θ_base,
"from base": what the experts would merge without θ₀) with those taken from θ₀
(τ_i = θ_i − θ₀, "from θ₀": what the pipeline merges). For each origin it reports the cosine of
every pair of experts over all weights, over the encoder and over the decoder (the decoder holds
the English target text of translation; the encoder the crop and the synthetic voices), and the
cosine of each expert's τ from base with θ₀ − θ_base (how much of it θ₀ already holds).

Tensors are read one at a time, so memory holds one tensor per model, not whole models; only
dot products and squared norms are accumulated (float64).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Mapping, Sequence

PARTS = ("all", "encoder", "decoder")


def part_of(key: str) -> str:
    """``encoder`` / ``decoder`` for a Whisper weight name, else ``other`` (e.g. ``proj_out``)."""
    if ".encoder." in f".{key}":
        return "encoder"
    if ".decoder." in f".{key}":
        return "decoder"
    return "other"


def check_finite(t, key: str, path: Path) -> None:
    import torch

    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{path}: non-finite values (NaN or Inf) in tensor {key!r}")


def _cos(dot: float, na: float, nb: float) -> float:
    return dot / math.sqrt(na * nb) if na > 0 and nb > 0 else math.nan


class _Gram:
    """Dot products of named vectors, accumulated part by part."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.dots: dict[str, dict[tuple[str, str], float]] = {p: {} for p in PARTS}

    def add(self, part: str, vectors: Mapping[str, "object"]) -> None:
        for a, b in itertools.combinations_with_replacement(self.names, 2):
            d = float((vectors[a].double() * vectors[b].double()).sum())
            for p in ("all", part):
                if p in self.dots:
                    self.dots[p][(a, b)] = self.dots[p].get((a, b), 0.0) + d

    def cosine(self, part: str, a: str, b: str) -> float:
        d = self.dots[part]
        key = (a, b) if (a, b) in d else (b, a)
        return _cos(d.get(key, 0.0), d.get((a, a), 0.0), d.get((b, b), 0.0))


def taskvector_cosines(
    base: str | Path, theta0: str | Path, experts: Mapping[str, str | Path], *, progress: bool = False
) -> dict:
    """Cosines of the experts' task vectors from the base and from θ₀ (module docstring).

    ``experts``: label -> weights file. Returns ``{"experts": [labels], "theta0_is_base": bool,
    "from_base": {part: {"pairs": {"a|b": cos}, "mean", "min", "max"}}, "from_theta0": {...},
    "with_theta0_shift": {label: cos(θ_i − θ_base, θ₀ − θ_base)}}``. Every file must hold the same
    float tensors (names and shapes), else the error names the tensor and the file.
    """
    from safetensors import safe_open

    labels = list(experts)
    if len(labels) < 2:
        raise ValueError(f"taskvector_cosines: need at least two experts, got {labels}")
    same = Path(base).resolve() == Path(theta0).resolve()
    files = {"__base__": Path(base), "__theta0__": Path(theta0), **{k: Path(v) for k, v in experts.items()}}
    handles = {k: safe_open(str(p), framework="pt") for k, p in files.items()}
    keys = list(handles["__base__"].keys())
    for name, h in handles.items():
        missing = set(keys) ^ set(h.keys())
        if missing:
            raise KeyError(f"{files[name]}: tensors differ from the base {files['__base__']}: {sorted(missing)[:5]}")
    from_base = _Gram(labels + ["__shift__"])
    from_theta0 = _Gram(labels)
    it = keys
    if progress:
        from tqdm import tqdm

        it = tqdm(keys, desc="task-vector cosines", unit="tensor")
    for key in it:
        b = handles["__base__"].get_tensor(key)
        if not b.is_floating_point():
            continue
        b = b.float()
        check_finite(b, key, files["__base__"])
        t0 = handles["__theta0__"].get_tensor(key).float()
        check_finite(t0, key, files["__theta0__"])
        if t0.shape != b.shape:
            raise ValueError(f"{files['__theta0__']}: tensor {key} has shape {tuple(t0.shape)}, base {tuple(b.shape)}")
        vb = {"__shift__": t0 - b}
        vt = {}
        for label in labels:
            e = handles[label].get_tensor(key).float()
            check_finite(e, key, files[label])
            if e.shape != b.shape:
                raise ValueError(f"{files[label]}: tensor {key} has shape {tuple(e.shape)}, base {tuple(b.shape)}")
            vb[label], vt[label] = e - b, e - t0
        part = part_of(key)
        from_base.add(part, vb)
        from_theta0.add(part, vt)
        del b, t0, vb, vt

    def summary(g: _Gram) -> dict:
        out = {}
        for p in PARTS:
            pairs = {f"{a}|{b}": g.cosine(p, a, b) for a, b in itertools.combinations(labels, 2)}
            vals = [v for v in pairs.values() if not math.isnan(v)]
            out[p] = {
                "pairs": pairs,
                "mean": sum(vals) / len(vals) if vals else math.nan,
                "min": min(vals) if vals else math.nan,
                "max": max(vals) if vals else math.nan,
            }
        return out

    return {
        "experts": labels,
        "theta0_is_base": same,
        "from_base": summary(from_base),
        "from_theta0": summary(from_theta0),
        "with_theta0_shift": {label: from_base.cosine("all", label, "__shift__") for label in labels},
    }
