"""Time the subspace / pruning merge methods on Whisper-base-shaped matrices.

Whisper base has 96 attention/MLP matrices: 72 of 512×512 (encoder 6×4, decoder 6×8) and
24 of 2048×512 / 512×2048 (fc1, fc2). This script times each method on one matrix of each shape
with N random task vectors and extrapolates to the whole model (non-matrix tensors are a mean or
sum and cost well under a second). Usage:

    .venv/bin/python benchmarks/subspace_methods_bench.py [--experts 10] [--threads 1] [--repeat 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from speechmerge.merging.base import REGISTRY, TensorContext
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

METHODS = ["iso_c", "iso_cts", "tsv_m", "tsv_m_ns", "boosted_tsv_m", "lors", "lors_lowrank", "lors_sparse"]
SHAPES = {(512, 512): 72, (2048, 512): 12, (512, 2048): 12}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experts", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--methods", nargs="*", default=METHODS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"experts={args.experts} threads={args.threads} (seconds; whole = extrapolated to Whisper base)")
    print(f"{'method':<15}" + "".join(f"{f'{m}x{n}':>12}" for m, n in SHAPES) + f"{'whole':>10}")
    for name in args.methods:
        method = REGISTRY[name]()
        row, whole = [], 0.0
        for shape, count in SHAPES.items():
            base = torch.zeros(shape)
            deltas = [torch.randn(shape, generator=g) * 1e-3 for _ in range(args.experts)]
            ctx = TensorContext("model.encoder.layers.0.fc1.weight", True)
            t0 = time.perf_counter()
            for _ in range(args.repeat):
                method.merge_tensor(base, deltas, ctx)
            dt = (time.perf_counter() - t0) / args.repeat
            row.append(dt)
            whole += dt * count
        print(f"{name:<15}" + "".join(f"{t:>12.3f}" for t in row) + f"{whole:>10.1f}")


if __name__ == "__main__":
    main()
