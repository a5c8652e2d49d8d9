"""Which Whisper sizes fit which GPU memory: the GPU memory ``speechmerge.jobresources`` computes
(``gpu_memory_mb``: weights, gradients and AdamW state, activations, the CUDA context) for full
fine-tuning with and without gradient checkpointing, LoRA, and greedy decoding, at 30 s and
bfloat16 autocast. Computed, not measured: a Markdown table for the README.

    .venv/bin/python benchmarks/gpu_fit_table.py [--batch 32] [--decode-batch 64] [--gpus 24 40 80 141]
"""

from __future__ import annotations

import argparse

from speechmerge.jobresources import WHISPER_DIMS, ModelSize, gpu_memory_mb

SIZES = {"tiny": "tiny", "base": "base", "small": "small", "medium": "medium", "large-v3": "large", "turbo": "turbo"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="training batch (per step, before accumulation)")
    ap.add_argument("--decode-batch", type=int, default=64)
    ap.add_argument("--context", type=float, default=30.0)
    ap.add_argument("--gpus", type=float, nargs="+", default=[24, 40, 80, 141], help="GPU memory sizes, GB")
    args = ap.parse_args()
    cases = [
        ("full", dict(task="train", method="full", batch=args.batch)),
        ("full + ckpt", dict(task="train", method="full", batch=args.batch, checkpointing=True)),
        ("LoRA", dict(task="train", method="lora", batch=args.batch)),
        ("LoRA + ckpt", dict(task="train", method="lora", batch=args.batch, checkpointing=True)),
        ("decode", dict(task="decode", batch=args.decode_batch)),
    ]
    print(
        f"GPU memory computed by speechmerge.jobresources.gpu_memory_mb, GB (not measured): {args.context:g} s "
        f"context, bfloat16 autocast, training batch {args.batch}, decoding batch {args.decode_batch}; "
        f"fits = smallest of {', '.join(f'{g:g}' for g in args.gpus)} GB that holds it\n"
    )
    print("| model | params | " + " | ".join(name for name, _ in cases) + " |")
    print("|---|---|" + "---|" * len(cases))
    for label, key in SIZES.items():
        size = ModelSize(*WHISPER_DIMS[key])
        cells = []
        for _, kw in cases:
            gb = gpu_memory_mb(size, context_s=args.context, precision="bfloat16", **kw) / 1000
            fits = next((f"{g:g}" for g in args.gpus if gb <= g), "none")
            cells.append(f"{gb:.1f} ({fits})")
        print(f"| {label} | {size.params / 1e6:.0f} M | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
