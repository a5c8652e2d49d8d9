"""Training throughput of the fine-tuning step (speechmerge.training) on CPU.

Measures samples/s of full fine-tuning steps (forward + backward + clip + AdamW) for Whisper
base at a cropped context (default 6 s), batch 8, with the trainer's own loss function and
optimiser settings; counts FLOPs of one step with torch.utils.flop_counter.FlopCounterMode
and reports achieved GFLOP/s; optionally prints a torch.profiler table of the top ops and a
coarse phase split (forward / backward / optimizer).

    .venv/bin/python benchmarks/train_bench.py --threads 2 --steps 4 --profile
    .venv/bin/python benchmarks/train_bench.py --precision bfloat16 --attn eager

Model: ``resources/models/whisper-base`` (the imported OpenAI weights) if present, else a
random base-sized ``WhisperConfig`` cropped to ``--seconds``. Inputs are log-mel features of
synthetic audio (values do not change the cost) and ``--tokens`` target tokens per example.
The machine may be shared: the script prints ``os.getloadavg()`` before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch


def load_model(path: str | None, seconds: int):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    if path and Path(path, "config.json").exists():
        from speechmerge.models import load_whisper

        model, _ = load_whisper(path)
        src = path
    else:
        cfg = WhisperConfig(vocab_size=51865, d_model=512, encoder_layers=6, decoder_layers=6,
                            encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048,
                            decoder_ffn_dim=2048, max_source_positions=50 * seconds)
        torch.manual_seed(0)
        model = WhisperForConditionalGeneration(cfg)
        src = "random base-sized WhisperConfig"
    return model.float(), src


def make_batch(model, batch: int, tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = model.config.max_source_positions * 2
    feats = torch.randn(batch, model.config.num_mel_bins, frames, generator=g) * 0.5
    prompt = torch.tensor([50258, 50261, 50359, 50363])
    body = torch.randint(220, 50000, (batch, tokens), generator=g)
    seq = torch.cat([prompt.expand(batch, -1), body, torch.full((batch, 1), 50257)], dim=1)
    labels = seq[:, 1:].clone()
    labels[:, :3] = -100
    return {"input_features": feats, "decoder_input_ids": seq[:, :-1].contiguous(), "labels": labels}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resources/models/whisper-base")
    ap.add_argument("--seconds", type=int, default=6, help="context if the model is built randomly")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=24, help="target text tokens per example")
    ap.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="auto: bf16 autocast on CPUs with native bf16 (what the trainer does)")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    ap.add_argument("--method", default="full", help="full | bitfit | lora | adalora | s2lora")
    ap.add_argument("--optimizer", choices=["foreach", "fused"], default="fused")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of one step")
    ap.add_argument("--phases", action="store_true", help="time forward / backward / optimizer separately")
    args = ap.parse_args()

    from torch.utils.flop_counter import FlopCounterMode

    from speechmerge.training.peft_methods import build_method
    from speechmerge.training.trainer import resolve_precision, target_loss

    torch.set_num_threads(args.threads)
    args.precision = resolve_precision(args.precision)
    print(f"load average before: {os.getloadavg()}  torch {torch.__version__}  threads {torch.get_num_threads()}")
    model, src = load_model(args.model, args.seconds)
    model.set_attn_implementation(args.attn)
    model.config.use_cache = False
    method = build_method(args.method, model, {}, total_steps=1000)
    whisper = method.whisper
    whisper.train()
    params = list(method.named_trainable().values())
    n_train = sum(p.numel() for p in params)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-5,
                            **{args.optimizer: True})
    batch = make_batch(whisper, args.batch, args.tokens)
    n_tok = int((batch["labels"] != -100).sum())
    ctx = whisper.config.max_source_positions / 50
    print(f"model: {src}; context {ctx:g} s; batch {args.batch} x {batch['decoder_input_ids'].shape[1]} decoder "
          f"tokens; method {args.method} ({n_train / 1e6:.2f} M trainable); {args.precision}; attn {args.attn}")

    def step(phases: dict | None = None):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bfloat16"):
            loss_sum, _, _ = target_loss(whisper, batch)
        t1 = time.perf_counter()
        (loss_sum / n_tok).backward()
        t2 = time.perf_counter()
        reg = method.regulariser()
        if reg is not None:
            reg.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        t3 = time.perf_counter()
        if phases is not None:
            phases.setdefault("forward", []).append(t1 - t0)
            phases.setdefault("backward", []).append(t2 - t1)
            phases.setdefault("clip+optimizer", []).append(t3 - t2)
        return t3 - t0

    step()  # warm-up (allocations, oneDNN kernels)
    with FlopCounterMode(display=False) as fc:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bfloat16"):
            loss_sum, _, _ = target_loss(whisper, batch)
        (loss_sum / n_tok).backward()
    flops = fc.get_total_flops()
    phases: dict = {}
    times = [step(phases) for _ in range(args.steps)]
    med = statistics.median(times)
    print(f"step time: median {med:.3f} s, min {min(times):.3f} s over {args.steps} steps -> "
          f"{args.batch / med:.2f} samples/s (best {args.batch / min(times):.2f}); "
          f"{med / args.batch:.3f} s per sample")
    print(f"FLOPs per step (fwd+bwd, FlopCounterMode): {flops / 1e9:.1f} GFLOP = {flops / args.batch / 1e9:.2f} "
          f"GFLOP/sample -> {flops / med / 1e9:.1f} GFLOP/s achieved (best {flops / min(times) / 1e9:.1f})")
    if args.phases or args.profile:
        for k, v in phases.items():
            print(f"  {k:15s} median {statistics.median(v):.3f} s ({100 * statistics.median(v) / med:.0f} %)")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=40))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
