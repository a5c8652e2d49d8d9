"""Training throughput of the fine-tuning step (speechmerge.training) on CPU.

Measures samples/s of training steps (forward + backward + clip + AdamW) for Whisper base at
the default run's context (5 s), batch 8, with the trainer's own loss function (logits at
target positions only), optimiser grouping and model set-up (blocked vocabulary head, contiguous
encoder states, deterministic algorithms without the NaN fill), on the CPU's native code path as
the workflow runs by default (``--cpu-isa avx2`` pins the AVX2 path); counts the FLOPs of one step with
``torch.utils.flop_counter.FlopCounterMode`` (eager attention, so attention matmuls are counted)
and reports achieved GFLOP/s. First it measures the machine's float32 GEMM peak (``torch.mm`` at
the same thread count, best of 5) and prints every rate as a fraction of it, and the samples/s
that the step's FLOPs would allow at that peak. Optionally: a torch.profiler table of the top
ops and a phase split (forward / backward / clip+optimizer).

    .venv/bin/python benchmarks/train_bench.py --precision float32                       # one job, 2 threads
    .venv/bin/python benchmarks/train_bench.py --precision float32 --jobs 2 --threads 1  # as the DAG trains
    .venv/bin/python benchmarks/train_bench.py --precision float32 --threads 1 --profile # what the trainer does
    .venv/bin/python benchmarks/train_bench.py --precision float32 --compare-layout      # encoder states
    .venv/bin/python benchmarks/train_bench.py --precision float32 --compare-head --vocab-products
    .venv/bin/python benchmarks/train_bench.py --precision float32 --allocator system    # glibc defaults

``--jobs 2 --threads 1`` starts two training processes of one thread each at once, as Snakemake
runs the default run's fine-tuning jobs on two cores, and prints each job's rate and the
machine's (their sum). ``--compare-head`` alternates the output layer as one ``proj_out``
product with the trainer's blocked head (speechmerge.training.vocab_head); ``--compare-layout``
alternates Whisper's transposed encoder states with the trainer's contiguous ones
(speechmerge.training.layout); ``--allocator keep`` (the default) lets glibc keep freed memory
as fine-tuning jobs do (speechmerge.allocator), and every configuration's minor page faults per
step are printed.

``--compare`` alternates the configuration before optimisation (float32, sdpa attention,
foreach AdamW, one output product, transposed states) with ``auto`` precision (bf16 autocast on
CPUs with native bf16; the workflow itself trains in float32 unless asked), ``--rounds`` times,
so both see the same machine load. Model: ``resources/models/whisper-base`` (the imported
OpenAI weights) if present, else a random base-sized ``WhisperConfig`` cropped to
``--seconds``. Inputs are random log-mel features and ``--tokens`` target tokens per example
(values do not change the cost). The machine may be shared: the load average is printed before
and after.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import sys
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
        cfg = WhisperConfig(
            vocab_size=51865,
            d_model=512,
            encoder_layers=6,
            decoder_layers=6,
            encoder_attention_heads=8,
            decoder_attention_heads=8,
            encoder_ffn_dim=2048,
            decoder_ffn_dim=2048,
            max_source_positions=50 * seconds,
        )
        torch.manual_seed(0)
        model = WhisperForConditionalGeneration(cfg)
        src = f"random base-sized WhisperConfig ({seconds} s)"
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


def plain_target_loss(whisper, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The trainer's loss before the blocked vocabulary head: one ``proj_out`` product and the
    token embedding's dense gradient (``--head plain``)."""
    import torch.nn.functional as F

    out = whisper.model(
        input_features=batch["input_features"], decoder_input_ids=batch["decoder_input_ids"], use_cache=False
    )
    mask = batch["labels"] != -100
    logits = whisper.proj_out(out.last_hidden_state[mask]).float()
    return F.cross_entropy(logits, batch["labels"][mask], reduction="sum")


class Setup:
    """A model + method + optimizer configured like the trainer (or like the baseline)."""

    def __init__(
        self,
        args,
        precision: str,
        attn: str,
        optimizer: str,
        head: str = "blocked",
        layout: str = "contiguous",
        device=None,
    ):
        from speechmerge.numerics import resolve_precision
        from speechmerge.training.layout import contiguous_encoder_states
        from speechmerge.training.peft import build_method
        from speechmerge.training.spec import choose_attention
        from speechmerge.training.vocab_head import sparse_token_embedding

        self.device = torch.device(device or "cpu")
        self.model, self.src = load_model(args.model, args.seconds)
        self.precision = resolve_precision(precision, device=self.device)
        self.attn = choose_attention(attn, int(self.model.config.max_source_positions))
        self.model.set_attn_implementation(self.attn)
        self.optimizer_kind = optimizer
        self.method = build_method(args.method, self.model, {}, total_steps=1000)
        self.whisper = self.method.whisper
        self.whisper.to(self.device)  # as the trainer: built on the host, then moved
        self.whisper.train()
        self.head = head
        if head == "blocked" and self.device.type == "cpu":  # the trainer's CPU-only head
            sparse_token_embedding(self.whisper)
        if layout == "contiguous":
            contiguous_encoder_states(self.whisper)
        self.params = list(self.method.named_trainable().values())
        decay = [p for p in self.params if p.ndim >= 2]
        no_decay = [p for p in self.params if p.ndim < 2]
        groups = [g for g in ({"params": decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
        self.opt = torch.optim.AdamW(groups, lr=1e-5, **{optimizer: True})
        self.batch = {k: v.to(self.device) for k, v in make_batch(self.whisper, args.batch, args.tokens).items()}
        self.n_tok = int((self.batch["labels"] != -100).sum())
        self.label = f"{self.precision}, attn {self.attn}, AdamW {optimizer}, {head} head, {layout} encoder states"

    def loss(self) -> torch.Tensor:
        from speechmerge.training.objective import target_loss

        if self.head == "plain":
            return plain_target_loss(self.whisper, self.batch)
        return target_loss(self.whisper, self.batch, accuracy=False)[0]

    def fwd_bwd(self):
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            loss_sum = self.loss()
        (loss_sum / self.n_tok).backward()

    def step(self, phases: dict | None = None) -> float:
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            loss_sum = self.loss()
        t1 = time.perf_counter()
        (loss_sum / self.n_tok).backward()
        t2 = time.perf_counter()
        reg = self.method.regulariser()
        if reg is not None:
            reg.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0, foreach=True)
        self.opt.step()
        if self.device.type == "cuda":  # the step's kernels have run, not only been queued
            torch.cuda.synchronize(self.device)
        t3 = time.perf_counter()
        if phases is not None:
            phases.setdefault("forward", []).append(t1 - t0)
            phases.setdefault("backward", []).append(t2 - t1)
            phases.setdefault("clip+optimizer", []).append(t3 - t2)
        return t3 - t0


def count_flops(args) -> float:
    """FLOPs of one forward+backward (eager attention, float32: every matmul is counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    s = Setup(args, "float32", "eager", "foreach", head="plain", layout="transposed")  # same products, all counted
    with FlopCounterMode(display=False) as fc:
        s.fwd_bwd()
    return float(fc.get_total_flops())


def gemm_peak(dtype: torch.dtype = torch.float32, repeats: int = 5) -> dict[str, float]:
    """Best GFLOP/s of ``torch.mm`` on this machine at the current thread count: a large square
    product (the BLAS peak) and the shapes of Whisper base's encoder linears at batch 8 x 250
    positions (2000 x 512 @ 512 x 512 and 2000 x 512 @ 512 x 2048). Best of ``repeats`` (the
    machine may be shared: the best run is the one least disturbed)."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, (m, k, n) in {"square 2048": (2048, 2048, 2048), "2000x512x512": (2000, 512, 512),
                            "2000x512x2048": (2000, 512, 2048)}.items():  # fmt: skip
        a = torch.randn(m, k, generator=g).to(dtype)
        b = torch.randn(k, n, generator=g).to(dtype)
        c = torch.empty(m, n, dtype=dtype)
        torch.mm(a, b, out=c)
        reps = max(1, int(2e10 // (2 * m * k * n)))  # ~20 GFLOP per timing
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b, out=c)
            best = min(best, (time.perf_counter() - t0) / reps)
        out[name] = 2 * m * k * n / best / 1e9
    return out


def vocab_products(n: int, d: int = 512, vocab: int = 51865, repeats: int = 7) -> None:
    """Times of the output layer's products at the step's shapes (n target positions): one
    product as ``nn.Linear`` runs it, and in blocks of ``vocab_head.VOCAB_BLOCK`` and its
    neighbours (speechmerge.training.vocab_head); best and median of ``repeats``."""
    from speechmerge.training.vocab_head import VOCAB_BLOCK

    g = torch.Generator().manual_seed(0)
    w = torch.randn(vocab, d, generator=g)
    h = torch.randn(n, d, generator=g)
    grad = torch.randn(n, vocab, generator=g)
    out = torch.empty(n, vocab)
    gw = torch.empty(vocab, d)

    def timed(fn):
        fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return f"{1e3 * min(ts):.1f} ms (median {1e3 * statistics.median(ts):.1f})"

    def fwd(block):
        for s in range(0, vocab, block):
            torch.mm(h, w[s : s + block].t(), out=out[:, s : s + block])

    def wgrad(block):
        for s in range(0, vocab, block):
            torch.mm(grad[:, s : s + block].t(), h, out=gw[s : s + block])

    print(f"output layer products, {n} positions x {d} -> {vocab} (best of {repeats}):")
    print(f"  logits   one product (nn.Linear) {timed(lambda: torch.nn.functional.linear(h, w))}")
    print(f"  weight grad one product (autograd) {timed(lambda: grad.t() @ h)}")
    for block in sorted({VOCAB_BLOCK // 2, VOCAB_BLOCK, VOCAB_BLOCK * 2}):
        mark = " (the trainer's)" if block == VOCAB_BLOCK else ""
        print(
            f"  blocks of {block}{mark}: logits {timed(lambda: fwd(block))}, weight grad {timed(lambda: wgrad(block))}"
        )


def report(label: str, times: list[float], flops: float, batch: int, peak: float | None = None) -> None:
    med, best = statistics.median(times), min(times)
    frac = (
        f" = {100 * flops / med / 1e9 / peak:.0f} % of the GEMM peak (best {100 * flops / best / 1e9 / peak:.0f} %)"
        if peak
        else ""
    )
    print(
        f"  {label}: step median {med:.3f} s (min {best:.3f}, n={len(times)}) -> {batch / med:.2f} samples/s "
        f"(best {batch / best:.2f}), {med / batch:.3f} s/sample, {flops / med / 1e9:.1f} GFLOP/s "
        f"(best {flops / best / 1e9:.1f}){frac}"
    )


def _job(args, config, barrier, results, rank: int) -> None:
    """One training process of :func:`side_by_side`."""
    from speechmerge.training.trainer import deterministic_algorithms

    torch.set_num_threads(args.threads)
    if args.allocator == "keep":
        from speechmerge.allocator import keep_freed_memory

        keep_freed_memory()
    with deterministic_algorithms():  # as in a fine-tuning job
        s = Setup(args, *config)
        s.step()  # warm-up
        barrier.wait()
        t0 = time.perf_counter()
        times = [s.step() for _ in range(args.steps)]
    results.put((rank, times, time.perf_counter() - t0, s.label))


def side_by_side(args, config: tuple, flops: float, peak: float) -> None:
    """``args.jobs`` processes of ``args.threads`` threads training at once (started together
    after a warm-up step each): every job's step times, and the machine's samples/s as the sum
    of the jobs' rates, against the GEMM peak of all their threads together."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(args.jobs), ctx.Queue()
    procs = [ctx.Process(target=_job, args=(args, config, barrier, results, r)) for r in range(args.jobs)]
    for p in procs:
        p.start()
    got = sorted(results.get() for _ in procs)
    for p in procs:
        p.join()
    total = 0.0
    print(f"{args.jobs} jobs side by side, {args.threads} thread(s) each, {args.steps} steps each ({got[0][3]}):")
    for rank, times, wall, _ in got:
        med = statistics.median(times)
        total += args.batch / med
        print(
            f"  job {rank}: step median {med:.3f} s (min {min(times):.3f}) -> {args.batch / med:.2f} samples/s; "
            f"{wall:.1f} s for its steps"
        )
    print(
        f"  machine: {total:.2f} samples/s, {total * flops / args.batch / 1e9:.1f} GFLOP/s = "
        f"{100 * total * flops / args.batch / 1e9 / peak:.0f} % of the {args.threads * args.jobs}-thread GEMM peak"
    )


def pin_code_path(isa: str) -> None:
    """Run with the math libraries' code path of ``--cpu-isa`` (speechmerge.numerics): their
    switches are read when the libraries start, so the process starts again with them set."""
    from speechmerge.numerics import apply_environment

    env = dict(os.environ)
    apply_environment({"numerics": {"cpu_isa": isa}}, env)
    if env != os.environ:
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resources/models/whisper-base")
    ap.add_argument(
        "--seconds", type=int, default=5, help="context if the model is built randomly (the default run: 5 s)"
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=24, help="target text tokens per example")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per configuration and round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        default="float32",
        help="float32 (the workflow's default), bfloat16 (autocast), auto: bfloat16 on CPUs with native bf16 "
        "dot products (the workflow's precision: auto)",
    )
    ap.add_argument(
        "--attn",
        choices=["auto", "sdpa", "eager"],
        default="auto",
        help="auto: what the trainer picks (eager up to 10 s contexts)",
    )
    ap.add_argument("--optimizer", choices=["foreach", "fused"], default="fused")
    ap.add_argument("--method", default="full", help="full | bitfit | lora | adalora | s2lora")
    ap.add_argument(
        "--head",
        choices=["blocked", "plain"],
        default="blocked",
        help="blocked: the trainer's vocabulary head (speechmerge.training.vocab_head); plain: one proj_out product",
    )
    ap.add_argument(
        "--allocator",
        choices=["keep", "system"],
        default="keep",
        help="keep: glibc keeps freed memory (speechmerge.allocator, what a fine-tuning job does); "
        "system: glibc's defaults. Process-wide, so compare with two runs",
    )
    ap.add_argument(
        "--layout",
        choices=["contiguous", "transposed"],
        default="contiguous",
        help="contiguous: the trainer's encoder states (speechmerge.training.layout); transposed: Whisper's own",
    )
    ap.add_argument(
        "--cpu-isa",
        choices=["avx2", "native"],
        default="native",
        help="native: the best code path the CPU has (the workflow's default); avx2: the math libraries' AVX2 "
        "code path, pinned as with numerics.cpu_isa: avx2 (speechmerge.numerics)",
    )
    ap.add_argument("--vocab-products", action="store_true", help="time the output layer's products, one vs in blocks")
    ap.add_argument("--compare", action="store_true", help="baseline vs trainer configuration, alternating")
    ap.add_argument(
        "--compare-head",
        action="store_true",
        help="plain vs blocked vocabulary head at the chosen settings, alternating",
    )
    ap.add_argument(
        "--compare-layout",
        action="store_true",
        help="Whisper's transposed vs the trainer's contiguous encoder states at the chosen settings, alternating",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="training processes side by side, --threads each, as Snakemake runs fine-tuning jobs "
        "(the default run: 2 jobs of 1 thread); prints each job's rate and their sum",
    )
    ap.add_argument("--rounds", type=int, default=2, help="alternations for --compare")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of one step")
    ap.add_argument(
        "--device",
        default=None,
        help="cpu, cuda or cuda:N: samples/s of the chosen configuration on that device, the trainer's set-up "
        "moved there (what benchmarks/gpu_check.sh runs); without it, the CPU measurements above",
    )
    ap.add_argument("--json", default=None, help="with --device: also write the figures to this JSON file")
    args = ap.parse_args()
    if args.device is not None:
        device_run(args)
        return
    if args.jobs > 1 and (args.compare or args.compare_head or args.compare_layout or args.profile):
        ap.error("--jobs measures the chosen configuration only: drop --compare*, --profile")
    pin_code_path(args.cpu_isa)
    from speechmerge.training.trainer import deterministic_algorithms

    with deterministic_algorithms():  # as speechmerge.training.train runs the trainer
        run(args)


def device_run(args) -> None:
    """samples/s of the chosen configuration on ``--device``: a warm-up step, then ``--steps``
    timed steps (each synchronised on a GPU), the trainer's set-up moved to the device."""
    import json

    from speechmerge.devices import gpu_info, job_device

    torch.set_num_threads(args.threads)
    device = job_device(args.device)
    cuda = device.type == "cuda"
    setup = Setup(args, args.precision, args.attn, args.optimizer, args.head, args.layout, device=device)
    setup.step()  # warm-up: kernels chosen, memory pools filled
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = [setup.step() for _ in range(args.steps)]
    best, mean = min(times), statistics.mean(times)
    rec = {
        "device": str(device),
        "gpu": gpu_info() if cuda else None,
        "model": setup.src,
        "context_s": setup.model.config.max_source_positions * 2 / 100,
        "batch": args.batch,
        "precision": setup.precision,
        "attn": setup.attn,
        "method": args.method,
        "step_s_best": best,
        "step_s_mean": mean,
        "samples_per_s": args.batch / mean,
        "peak_gpu_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
    }
    print(
        f"{setup.label} on {device}: {rec['samples_per_s']:.2f} samples/s (mean of {args.steps} steps, "
        f"best {best:.3f} s/step)" + (f", peak GPU memory {rec['peak_gpu_mem_gb']:.1f} GB" if cuda else "")
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rec, indent=1))


def run(args) -> None:
    torch.set_num_threads(args.threads * args.jobs)
    kept = False
    if args.allocator == "keep":
        from speechmerge.allocator import keep_freed_memory

        kept = keep_freed_memory()
    print(
        f"load average before: {os.getloadavg()}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
        f"cpu capability {torch.backends.cpu.get_cpu_capability()} ({args.cpu_isa}); freed memory kept: {kept}"
    )
    peaks = gemm_peak(torch.float32)
    peak = max(peaks.values())
    print(
        "float32 GEMM peak (torch.mm, best of 5): "
        + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items())
        + f" GFLOP/s; peak {peak:.1f} GFLOP/s"
    )
    if args.vocab_products:
        vocab_products(args.batch * (args.tokens + 1))
    flops = count_flops(args)
    print(f"  -> at most {peak * 1e9 / (flops / args.batch):.2f} samples/s if every FLOP ran at the peak")
    configs = [(args.precision, args.attn, args.optimizer, args.head, args.layout)]
    if args.jobs > 1:
        side_by_side(args, configs[0], flops, peak)
        print(f"load average after: {os.getloadavg()}")
        return
    torch.set_num_threads(args.threads)
    if args.compare:
        configs = [
            ("float32", "sdpa", "foreach", "plain", "transposed"),
            ("auto", "auto", "fused", "blocked", "contiguous"),
        ]
    elif args.compare_head:
        configs = [(args.precision, args.attn, args.optimizer, h, args.layout) for h in ("plain", "blocked")]
    elif args.compare_layout:
        configs = [(args.precision, args.attn, args.optimizer, args.head, x) for x in ("transposed", "contiguous")]
    setups = [Setup(args, *c) for c in configs]
    s0 = setups[0]
    print(
        f"model: {s0.src}; context {s0.whisper.config.max_source_positions / 50:g} s; batch {args.batch} x "
        f"{s0.batch['decoder_input_ids'].shape[1]} decoder tokens ({s0.n_tok} targets); method {args.method} "
        f"({sum(p.numel() for p in s0.params) / 1e6:.2f} M trainable)"
    )
    print(
        f"FLOPs per step (forward + backward, FlopCounterMode): {flops / 1e9:.1f} GFLOP = "
        f"{flops / args.batch / 1e9:.2f} GFLOP/sample"
    )
    times = {s.label: [] for s in setups}
    phases = {s.label: {} for s in setups}
    for s in setups:
        s.step()  # warm-up: allocations, oneDNN kernel selection
    alternate = args.compare or args.compare_head or args.compare_layout
    faults = {s.label: 0 for s in setups}
    for _ in range(args.rounds if alternate else 1):
        for s in setups:
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            times[s.label] += [s.step(phases[s.label]) for _ in range(args.steps)]
            faults[s.label] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    for s in setups:
        report(s.label, times[s.label], flops, args.batch, peak)
        print(f"      minor page faults per step: {faults[s.label] / len(times[s.label]):,.0f}")
        for k, v in phases[s.label].items():
            print(
                f"      {k:15s} median {statistics.median(v):.3f} s "
                f"({100 * statistics.median(v) / statistics.median(times[s.label]):.0f} %)"
            )
    if alternate:
        a, b = (statistics.median(times[s.label]) for s in setups)
        print(f"  speed-up of the second configuration: {a / b:.2f}x")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        s = setups[-1]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            s.step()
        print(f"profile of one step ({s.label}):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=42))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
