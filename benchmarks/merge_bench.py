"""Wall time and peak memory of every merge method on Whisper-base-sized inputs.

For N experts (default 2, 5, 10) the script writes a base checkpoint and N synthetic task
vectors once, then runs each method in a fresh subprocess (torch on ``--threads`` threads,
default 2) through the streaming engine (``merge_files``) and, for comparison, through a naive
merge that loads the base and every task vector fully into memory, merges with
``merge_tensor`` and saves the state dict. Memory is the subprocess' peak RSS
(``resource.getrusage(...).ru_maxrss``) minus its RSS after imports, i.e. everything the merge
itself held, base included, in units of one model (the base file's size).

Base: ``resources/models/whisper-base/model.safetensors`` if it exists (``python -m speechmerge
import-model --spec bundle:whisper-base --out resources/models/whisper-base``), else random
weights with Whisper-base shapes (d_model 512, 6 + 6 layers, FFN 2048, vocab 51865; tied
``proj_out.weight`` left out as in a saved checkpoint). Task vectors: per 2-D tensor a rank-16
product plus Gaussian noise (entries ~1e-3), other tensors Gaussian ~1e-4; float32.
Targets: every method < 120 s on 10 experts; streaming peak < 1.5 models at any N.

    .venv/bin/python benchmarks/merge_bench.py [--methods ties pcb ...] [--n 2 5 10]
        [--naive all|none|METHOD ...] [--threads 2] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_BASE = REPO / "resources/models/whisper-base/model.safetensors"
TARGET_S, TARGET_MODELS = 120.0, 1.5


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_child(args: list[str], threads: int = 1, timeout: float | None = None) -> subprocess.CompletedProcess:
    """This script in a fresh interpreter (the driver never imports torch: a child's ru_maxrss
    starts at its parent's RSS at fork time, so a heavy driver would inflate every figure)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)  # fmt: skip


# --- inputs ----------------------------------------------------------------------------------------


def random_whisper_base() -> dict:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = WhisperConfig(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                        decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
                        vocab_size=51865)  # fmt: skip
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WhisperForConditionalGeneration(cfg).state_dict().items()}
    shapes.pop("proj_out.weight", None)
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}


def synthetic_task_vector(base: dict, seed: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(1000 + seed)
    out = {}
    for key, t in base.items():
        if t.ndim == 2:
            m, n = t.shape
            u = torch.randn(m, 16, generator=g)
            v = torch.randn(16, n, generator=g)
            out[key] = (u @ v) * (1e-3 / 4) + torch.randn(m, n, generator=g) * 2e-4
        else:
            out[key] = torch.randn(t.shape, generator=g) * 1e-4
    return out


def prepare(workdir: Path, n_max: int) -> tuple[Path, list[Path]]:
    import torch
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(1)
    workdir.mkdir(parents=True, exist_ok=True)
    base_path = workdir / "base.safetensors"
    if REAL_BASE.exists():
        base_path = REAL_BASE
        base = load_file(REAL_BASE)
    elif not base_path.exists():
        base = random_whisper_base()
        save_file(base, base_path)
    else:
        base = load_file(base_path)
    tvs = []
    for i in range(n_max):
        path = workdir / f"tv{i}.safetensors"
        if not path.exists():
            save_file(synthetic_task_vector(base, i), path)
        tvs.append(path)
    return base_path, tvs


# --- one measurement (child process) -------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    import torch

    from speechmerge.devices import job_device
    from speechmerge.merging import get_method
    from speechmerge.merging.engine import merge_files, on_device

    torch.set_num_threads(args.threads)
    method = get_method(args.method)
    tvs = args.tvs
    device = job_device(args.device)
    if device.type == "cuda":  # CUDA's context and kernels loaded before the clock starts
        torch.ones(1, device=device).sum().item()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    if args.mode == "stream":
        with on_device(device):
            merge_files(args.base, tvs, method, args.out, seed=0, progress=False)
    else:
        naive_merge(args.base, tvs, method, args.out)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "rss0_mb": rss0, "peak_mb": peak}))


def naive_merge(base_path: str, tv_paths: list[str], method, out: str) -> None:
    """Everything in memory: base, N task vectors and the merged state dict."""
    from safetensors.torch import load_file, save_file

    from speechmerge.merging import TensorContext, is_matrix

    base = load_file(base_path)
    tvs = [load_file(p) for p in tv_paths]
    merged = {}
    for key, b in base.items():
        deltas = [tv[key].float() for tv in tvs]
        delta = method.merge_tensor(b.float(), deltas, TensorContext(key, is_matrix(key, b), 0))
        merged[key] = (b.float() + delta).to(b.dtype)
    save_file(merged, out)


# --- driver --------------------------------------------------------------------------------------


def measure(
    mode: str, method: str, base: Path, tvs: list[Path], out: Path, threads: int, timeout: float, device: str = "cpu"
) -> dict:
    cmd = ["--child", mode, "--method", method, "--base", str(base), "--out", str(out),
           "--threads", str(threads), "--device", device, "--tvs", *map(str, tvs)]  # fmt: skip
    try:
        proc = run_child(cmd, threads, timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout:.0f} s"}
    finally:
        out.unlink(missing_ok=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(res: dict | None, model_mb: float) -> tuple[str, str]:
    if res is None:
        return "", ""
    if "error" in res:
        return res["error"], ""
    extra = res["peak_mb"] - res["rss0_mb"]
    return f"{res['wall_s']:.1f}", f"{extra:.0f} ({extra / model_mb:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    ap.add_argument("--n", nargs="*", type=int, default=[2, 5, 10], help="numbers of experts")
    ap.add_argument("--naive", nargs="*", default=["all"], help="methods to also run naively: all, none or names")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--workdir", type=Path, default=None, help="where inputs are written (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated inputs")
    ap.add_argument(
        "--device",
        default="cpu",
        help="merging.device of the streaming merges: cpu, cuda, cuda:N (the SVD / Newton-Schulz methods factorise there)",
    )
    ap.add_argument("--json", default=None, help="also write every figure to this JSON file")
    # child mode (internal)
    ap.add_argument("--child", choices=["stream", "naive"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--tvs", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--prepare", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--list", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.mode = args.child
        child(args)
        return
    if args.list:
        from speechmerge.merging import REGISTRY
        from speechmerge.merging import methods as _methods  # noqa: F401  (registers every method)

        print(json.dumps(sorted(REGISTRY)))
        return
    if args.prepare:
        base, tvs = prepare(args.workdir, args.prepare)
        print(json.dumps({"base": str(base), "tvs": [str(p) for p in tvs]}))
        return

    registry = json.loads(run_child(["--list"]).stdout)
    names = args.methods or registry
    unknown = sorted(set(names) - set(registry))
    if unknown:
        sys.exit(f"unknown method(s) {unknown}; available: {registry}")
    naive = set(names) if args.naive == ["all"] else set() if args.naive == ["none"] else set(args.naive)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="merge_bench_"))
    t0 = time.perf_counter()
    prep = run_child(["--prepare", str(max(args.n)), "--workdir", str(workdir)])
    if prep.returncode != 0:
        sys.exit(f"preparing inputs failed:\n{prep.stderr}")
    paths = json.loads(prep.stdout.strip().splitlines()[-1])
    base, tvs = Path(paths["base"]), [Path(p) for p in paths["tvs"]]
    model_mb = base.stat().st_size / 2**20
    print(f"base: {'real whisper-base' if base.resolve() == REAL_BASE.resolve() else 'random Whisper-base shapes'} "
          f"({model_mb:.0f} MB = 1 model); inputs ready in {time.perf_counter() - t0:.0f} s; "
          f"torch threads {args.threads}", flush=True)  # fmt: skip
    print("\nwall = merge seconds; mem = peak RSS above the process after imports, MB (models)\n")
    print("| method | N | stream wall s | stream mem MB (models) | naive wall s | naive mem MB (models) |")
    print("|---|---|---|---|---|---|", flush=True)
    failures, rows = [], []
    for n in args.n:
        for name in names:
            out = workdir / "merged.safetensors"
            s = measure("stream", name, base, tvs[:n], out, args.threads, args.timeout, args.device)
            rows.append({"method": name, "n": n, "device": args.device, "stream": s})
            nv = measure("naive", name, base, tvs[:n], out, args.threads, args.timeout) if name in naive else None
            sw, sm = fmt(s, model_mb)
            nw, nm = fmt(nv, model_mb)
            print(f"| {name} | {n} | {sw} | {sm} | {nw} | {nm} |", flush=True)
            if "error" in s:
                failures.append(f"{name} N={n}: {s['error']}")
            else:
                if n == 10 and s["wall_s"] > TARGET_S:
                    failures.append(f"{name} N={n}: {s['wall_s']:.0f} s > {TARGET_S:.0f} s")
                if (s["peak_mb"] - s["rss0_mb"]) / model_mb > TARGET_MODELS:
                    failures.append(f"{name} N={n}: peak {(s['peak_mb'] - s['rss0_mb']) / model_mb:.2f} models")
    print("\ntargets missed:" if failures else "\nall targets met", *failures, sep="\n  ")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "model_mb": model_mb, "rows": rows}, indent=1))
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
