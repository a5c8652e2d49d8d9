"""speechmerge and mergekit side by side: the same Whisper experts, the same methods, equal
hyperparameters; wall time, peak RSS and the difference of the merged tensors per method.

    bash benchmarks/mergekit_setup.sh                 # once: .venv-mergekit with mergekit 0.1.5
    .venv/bin/python benchmarks/mergekit_bench.py --experts DIR DIR DIR DIR DIR [--base DIR]
    .venv/bin/python benchmarks/mergekit_bench.py     # five synthetic experts (see below)
        [--methods linear ties ...] [--threads 2] [--workdir benchmarks/out/mergekit] [--keep]

Inputs. ``--base``: a Whisper model directory, default ``resources/models/whisper-base``
(``python -m speechmerge import-model --spec bundle:whisper-base --out resources/models/whisper-base``).
``--experts``: fine-tuned model directories (``model.safetensors``) or ``.safetensors`` files
of the same architecture (e.g. a default run's ``results/models/<experiment>/expert-*``).
Without ``--experts`` five SYNTHETIC experts are written: θ_i = θ_0 + 1e-4 · (c + r_i) per
float tensor, c shared, r_i per expert, standard normal (seeded); the output says so. Both tools
read the same files (a directory per expert with the base's ``config.json`` and the expert's
weights, linked).

Runs. Each merge is its own subprocess (``OMP_NUM_THREADS`` = ``--threads``, and each tool's
own thread option): speechmerge via ``python -m speechmerge merge`` (the streaming engine on
full checkpoints), mergekit via ``mergekit-yaml`` (float32 in and out, one shard, no tokenizer
copy or model card). Wall time is the subprocess' (imports included: each tool as a user runs
it); CPU time is its user + system time (less sensitive to a shared machine than wall time);
peak RSS is its ``ru_maxrss`` (the driver imports no torch, so the fork inherits little).
The two tools alternate per method so both see the same machine load.

Equal hyperparameters (speechmerge method / mergekit config):
  linear          soup (uniform)                  / linear, weight 1 each, normalize
  task_arithmetic task_arithmetic scaling 0.3     / task_arithmetic, weight 1, lambda 0.3
  ties            ties keep 0.2, λ 1              / ties, density 0.2, weight 1, normalize, lambda 1
  dare_ties       dare_ties drop 0.9, λ 1         / dare_ties, density 0.1, weight 1, normalize, rescale
  model_stock     model_stock                     / model_stock
  karcher         karcher max_iter 10, tol 1e-5   / karcher max_iter 10, tol 1e-5 (no base model)
  multislerp      multislerp (uniform, eps 1e-8)  / multislerp, base model, weight 1, normalize_weights
  sce             sce keep 0.1                    / sce, select_topk 0.1

Where the algorithms knowingly differ (so more than float rounding is expected):
  * ties: mergekit keeps exactly k = int(0.2 · numel) entries by ``argsort`` (ties at the
    threshold broken by sort order), speechmerge keeps every |τ| ≥ the k-th largest (all ties);
    an entry whose trimmed sum is exactly 0 gets sign +1 in mergekit, the tensor's majority sign
    in speechmerge (the TIES reference). Only entries at the top-k boundary differ.
  * dare_ties: random masks from different generators (torch's global RNG in mergekit, a
    generator per tensor from seed and name in speechmerge), so the same mask is impossible;
    mergekit also rescales survivors by the L1-norm ratio, speechmerge by 1 / (1 − p). The
    benchmark compares statistics instead: the fraction of non-zero merged deltas, the norm of
    the merged delta, and the difference to mergekit next to the difference between two
    speechmerge seeds (two draws of the same algorithm).
  * model_stock: mergekit clamps ‖τ_i‖‖τ_j‖ to ≥ 1e-6 in the cosine, which drives t towards 0 for
    small tensors with small updates (biases, norms); speechmerge uses the exact cosine.
  * karcher: mergekit runs the iteration in float32 on the weights (angles between experts
    of ~1e-3 rad come from float32 dot products near 1), speechmerge on a float64 Gram matrix:
    differences beyond float32 rounding of the weights are mergekit's rounding of the angles.
  * sce: mergekit replaces the energy weights by uniform ones when Σ_i mean(τ̂_i²) < 1e-6, which
    holds for fine-tuning-sized updates; speechmerge keeps the energy weights. mergekit's top-k
    keeps exactly k, speechmerge all ties.
  * multislerp: where every task vector of a tensor is zero (a tensor no expert changed, e.g.
    Whisper's frozen encoder positions) the weighted mean direction is 0; mergekit raises for more
    than two experts ("The weighted sum of the input tensors is zero"), so its Multi-SLERP cannot
    merge such experts; speechmerge falls back to the linear combination (Δ = 0 there). A failed
    merge is reported, and the benchmark goes on.
  * linear / task_arithmetic / multislerp: the same algorithm; mergekit averages weights
    (Σ w_i θ_i) where speechmerge adds the averaged deltas to θ_0, and multislerp's norms and
    dots are float32 in mergekit, float64 in speechmerge: float rounding only.

mergekit 0.1.5's Whisper architecture file (``_data/architectures/whisper.json``) has
``"weight_prefix": "model.decoder"`` without the trailing dot (the encoder's has it), so mergekit
looks for ``model.decoderlayers.0...`` and every Whisper merge fails as released. The benchmark
corrects that one string in the mergekit venv (never in a shared installation) and prints so.

Differences are over every tensor both outputs have (mergekit leaves out the tied
``proj_out.weight`` as the base does): max |a − b|, entries with a ≠ b, ‖a − b‖ / ‖b‖ (relative
Frobenius, b = speechmerge's weights) and ‖a − b‖ / ‖Δ‖ (relative to speechmerge's merged delta
Δ = θ − θ_0, which says how much of the merge itself differs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASE = REPO / "resources/models/whisper-base"
DEFAULT_VENV = REPO / ".venv-mergekit"
MERGEKIT_VERSION = "0.1.5"

# name -> (speechmerge method, speechmerge hparams, mergekit merge_method, uses base model,
#          per-model parameters, global parameters)
METHODS: dict[str, tuple[str, dict, str, bool, dict, dict]] = {
    "linear": ("soup", {}, "linear", False, {"weight": 1.0}, {"normalize": True}),
    "task_arithmetic": ("task_arithmetic", {"scaling": 0.3}, "task_arithmetic", True,
                        {"weight": 1.0}, {"lambda": 0.3, "normalize": False}),
    "ties": ("ties", {"keep_fraction": 0.2, "scaling": 1.0}, "ties", True,
             {"weight": 1.0, "density": 0.2}, {"normalize": True, "lambda": 1.0}),
    "dare_ties": ("dare_ties", {"drop_rate": 0.9, "scaling": 1.0}, "dare_ties", True,
                  {"weight": 1.0, "density": 0.1}, {"normalize": True, "rescale": True, "lambda": 1.0}),
    "model_stock": ("model_stock", {}, "model_stock", True, {}, {}),
    "karcher": ("karcher", {"max_iter": 10, "tol": 1e-5}, "karcher", False, {}, {"max_iter": 10, "tol": 1e-5}),
    "multislerp": ("multislerp", {"eps": 1e-8}, "multislerp", True, {"weight": 1.0},
                   {"normalize_weights": True, "eps": 1e-8}),
    "sce": ("sce", {"keep_fraction": 0.1}, "sce", True, {}, {"select_topk": 0.1}),
}  # fmt: skip
RANDOM = {"dare_ties"}


# --- mergekit environment ------------------------------------------------------------------------


def mergekit_site(venv: Path) -> Path:
    out = subprocess.run([str(venv / "bin/python"), "-c", "import mergekit, os; print(os.path.dirname(mergekit.__file__))"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return Path(out.stdout.strip())


def ensure_mergekit(venv: Path) -> None:
    if not (venv / "bin/mergekit-yaml").exists():
        print(f"no mergekit in {venv}: running benchmarks/mergekit_setup.sh {venv}", flush=True)
        subprocess.run(["bash", str(REPO / "benchmarks/mergekit_setup.sh"), str(venv)], check=True)
    version = subprocess.run([str(venv / "bin/python"), "-c", "import importlib.metadata as m; print(m.version('mergekit'))"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    if version != MERGEKIT_VERSION:
        raise SystemExit(f"{venv}: mergekit {version}, this benchmark compares with {MERGEKIT_VERSION}")
    arch = mergekit_site(venv) / "_data/architectures/whisper.json"
    text = arch.read_text()
    bad, good = '"weight_prefix": "model.decoder"', '"weight_prefix": "model.decoder."'
    if bad in text:
        arch.write_text(text.replace(bad, good))
        print(f"mergekit {version}: {arch.relative_to(venv)} has {bad} (no trailing dot; the encoder's "
              f"prefix has one), so mergekit looks for 'model.decoderlayers.0....' and every Whisper merge "
              f"fails as released. Corrected to {good} in this venv only.")  # fmt: skip
    elif good in text:
        print(f"mergekit {version}: Whisper decoder weight prefix already corrected in {venv} "
              f"(released file lacks the trailing dot of 'model.decoder.').")  # fmt: skip
    else:
        raise SystemExit(f"{arch}: unexpected decoder weight_prefix; check the file by hand")


# --- inputs --------------------------------------------------------------------------------------


def child_synth(args: argparse.Namespace) -> None:
    """Write ``args.n`` synthetic experts θ_0 + 1e-4 (c + r_i) into workdir/synthetic-i.safetensors."""
    import torch
    from safetensors.torch import save_file

    from speechmerge.merging.engine import Checkpoint

    torch.set_num_threads(1)
    base = Checkpoint(args.base, "base")
    out = Path(args.workdir)
    for i in range(args.n):
        path = out / f"synthetic-{i}.safetensors"
        if path.exists():
            continue
        sd = {}
        for key, spec in base.specs.items():
            t = base.read(key)
            if spec.is_float:
                g = torch.Generator().manual_seed(17)
                c = torch.randn(t.shape, generator=g)
                g.manual_seed(1000 * (i + 1) + zlib.crc32(key.encode()))
                t = (t.float() + 1e-4 * (c + torch.randn(t.shape, generator=g))).to(t.dtype)
            sd[key] = t
        save_file(sd, str(path) + ".tmp", metadata={"format": "pt"})
        os.replace(str(path) + ".tmp", path)
    base.close()


def model_dir(src: Path, base: Path, dest: Path) -> Path:
    """``dest`` with the base's config.json and ``src``'s weights (links), for both tools."""
    dest.mkdir(parents=True, exist_ok=True)
    weights = src / "model.safetensors" if src.is_dir() else src
    if not weights.is_file():
        raise SystemExit(f"{src}: no model.safetensors (sharded experts are not handled by this benchmark)")
    for name, target in (("config.json", base / "config.json"), ("model.safetensors", weights)):
        link = dest / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target.resolve())
    return dest


# --- runs ----------------------------------------------------------------------------------------


def timed(cmd: list[str], threads: int, log: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        return {
            "failed": f"exit {proc.returncode}: {lines[-1] if lines else '(no output)'} (log: {log})",
            "wall_s": round(wall, 2),
        }
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 3),
    }


def run_speechmerge(name: str, base: Path, experts: list[Path], out: Path, threads: int, seed: int) -> dict:
    method, hp = METHODS[name][:2]
    cmd = [sys.executable, "-m", "speechmerge", "merge", "--method", method, "--base", str(base),
           "--experts", *map(str, experts), "--out", str(out), "--threads", str(threads),
           "--seed", str(seed), "--quiet"]  # fmt: skip
    for k, v in hp.items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    return timed(cmd, threads, out.with_suffix(".log"))


def mergekit_config(name: str, base: Path, experts: list[Path]) -> dict:
    _, _, mk, uses_base, per_model, params = METHODS[name]
    cfg: dict = {"merge_method": mk, "dtype": "float32", "out_dtype": "float32",
                 "models": [{"model": str(e), **({"parameters": per_model} if per_model else {})} for e in experts]}  # fmt: skip
    if uses_base:
        cfg["base_model"] = str(base)
    if params:
        cfg["parameters"] = params
    return cfg


def run_mergekit(name: str, base: Path, experts: list[Path], out: Path, threads: int, venv: Path, seed: int) -> dict:
    cfg_path = out.with_suffix(".yml")
    cfg_path.write_text(json.dumps(mergekit_config(name, base, experts), indent=1))  # JSON is YAML
    if out.exists():
        shutil.rmtree(out)
    cmd = [str(venv / "bin/mergekit-yaml"), str(cfg_path), str(out), "--no-copy-tokenizer",
           "--no-write-model-card", "--num-threads", str(threads), "--out-shard-size", "100B",
           "--random-seed", str(seed), "--quiet"]  # fmt: skip
    return timed(cmd, threads, out.with_suffix(".log"))


# --- comparison (child, speechmerge venv) ----------------------------------------------------------


def child_compare(args: argparse.Namespace) -> None:
    """JSON on stdout: differences between args.a (mergekit) and args.b (speechmerge)."""
    import torch

    from speechmerge.merging.engine import Checkpoint

    torch.set_num_threads(1)
    a, b, base = Checkpoint(args.a, "a"), Checkpoint(args.b, "b"), Checkpoint(args.base, "base")
    keys = [k for k in b.specs if k in a.specs]
    res = {"only_a": sorted(set(a.specs) - set(b.specs)), "only_b": sorted(set(b.specs) - set(a.specs)),
           "max_abs": 0.0, "n_diff": 0, "numel": 0, "worst": None}  # fmt: skip
    ss_diff = ss_b = ss_delta_a = ss_delta_b = 0.0
    nz_a = nz_b = 0
    for k in keys:
        ta, tb = a.read(k).double(), b.read(k).double()
        if ta.shape != tb.shape:
            raise SystemExit(f"tensor {k!r}: shape {tuple(ta.shape)} vs {tuple(tb.shape)}")
        t0 = base.read(k).double()
        d = (ta - tb).abs()
        m = float(d.max()) if d.numel() else 0.0
        if m > res["max_abs"]:
            res["max_abs"], res["worst"] = m, k
        res["n_diff"] += int((ta != tb).sum())
        res["numel"] += ta.numel()
        ss_diff += float((d * d).sum())
        ss_b += float((tb * tb).sum())
        ss_delta_a += float(((ta - t0) ** 2).sum())
        ss_delta_b += float(((tb - t0) ** 2).sum())
        nz_a += int((ta != t0).sum())
        nz_b += int((tb != t0).sum())
    res["rel_fro"] = (ss_diff / ss_b) ** 0.5 if ss_b else 0.0
    res["rel_fro_delta"] = (ss_diff / ss_delta_b) ** 0.5 if ss_delta_b else 0.0
    res["delta_norm_a"], res["delta_norm_b"] = ss_delta_a**0.5, ss_delta_b**0.5
    res["nonzero_delta_a"], res["nonzero_delta_b"] = nz_a / max(1, res["numel"]), nz_b / max(1, res["numel"])
    print(json.dumps(res))


def compare(a: Path, b: Path, base: Path, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", "compare", "--a", str(a), "--b", str(b),
                          "--base", str(base)], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)})  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"comparison failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- driver --------------------------------------------------------------------------------------


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, default=DEFAULT_BASE)
    ap.add_argument(
        "--experts",
        type=Path,
        nargs="*",
        default=None,
        help="expert model dirs or .safetensors files (default: 5 synthetic experts)",
    )
    ap.add_argument("--n-synthetic", type=int, default=5)
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=REPO / "benchmarks/out/mergekit")
    ap.add_argument("--mergekit-venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument("--keep", action="store_true", help="keep the merged models")
    ap.add_argument("--child", choices=["synth", "compare"], help=argparse.SUPPRESS)
    ap.add_argument("--a", help=argparse.SUPPRESS)
    ap.add_argument("--b", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "synth":
        return child_synth(args)
    if args.child == "compare":
        return child_compare(args)

    base = args.base.resolve()
    if not (base / "config.json").is_file() or not (base / "model.safetensors").is_file():
        raise SystemExit(f"{base}: need a Whisper model directory with config.json and model.safetensors "
                         f"(python -m speechmerge import-model --spec bundle:whisper-base --out {args.base})")  # fmt: skip
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    ensure_mergekit(args.mergekit_venv.resolve())
    venv = args.mergekit_venv.resolve()

    if args.experts:
        sources = [p.resolve() for p in args.experts]
        print(f"experts: {len(sources)} given: " + ", ".join(str(p) for p in sources))
    else:
        syn = work / "synthetic"
        syn.mkdir(exist_ok=True)
        subprocess.run([sys.executable, __file__, "--child", "synth", "--base", str(base / "model.safetensors"),
                        "--workdir", str(syn), "--n", str(args.n_synthetic)], check=True, cwd=REPO)  # fmt: skip
        sources = [syn / f"synthetic-{i}.safetensors" for i in range(args.n_synthetic)]
        print(f"experts: {len(sources)} SYNTHETIC experts (θ_0 + 1e-4 · (shared + own) Gaussian noise per "
              f"tensor, not fine-tuned models) around {base}")  # fmt: skip
    experts = [model_dir(p, base, work / "inputs" / f"expert-{i}") for i, p in enumerate(sources)]
    base_in = model_dir(base, base, work / "inputs" / "base")
    print(f"threads {args.threads}; load average before: {load_average()}", flush=True)

    results = []
    for j, name in enumerate(args.methods):
        sm_out, mk_out = work / f"sm-{name}", work / f"mk-{name}"
        order = ["sm", "mk"] if j % 2 == 0 else ["mk", "sm"]
        row: dict = {"method": name}
        for tool in order:
            if tool == "sm":
                row["speechmerge"] = run_speechmerge(name, base_in, experts, sm_out, args.threads, args.seed)
            else:
                row["mergekit"] = run_mergekit(name, base_in, experts, mk_out, args.threads, venv, args.seed)
        if "failed" in row["speechmerge"] or "failed" in row["mergekit"]:
            results.append(row)
            for tool in ("speechmerge", "mergekit"):
                if "failed" in row[tool]:
                    print(
                        f"\n{name}: {tool} FAILED after {row[tool]['wall_s']:.1f} s: {row[tool]['failed']}", flush=True
                    )
            continue
        row["diff"] = compare(mk_out, sm_out, base_in / "model.safetensors", args.threads)
        if name in RANDOM:  # a second speechmerge draw: the spread of the algorithm itself
            sm2 = work / f"sm-{name}-seed{args.seed + 1}"
            run_speechmerge(name, base_in, experts, sm2, args.threads, args.seed + 1)
            row["diff_seeds"] = compare(sm2, sm_out, base_in / "model.safetensors", args.threads)
            if not args.keep:
                shutil.rmtree(sm2, ignore_errors=True)
        results.append(row)
        report_row(row)
        if not args.keep:
            shutil.rmtree(sm_out, ignore_errors=True)
            shutil.rmtree(mk_out, ignore_errors=True)
    print(f"load average after: {load_average()}")
    summary(results)
    (work / "results.json").write_text(json.dumps({"experts": [str(p) for p in sources], "synthetic": not args.experts,
                                                   "threads": args.threads, "results": results}, indent=1))  # fmt: skip
    print(f"written: {work / 'results.json'}")


def report_row(row: dict) -> None:
    sm, mk, d = row["speechmerge"], row["mergekit"], row["diff"]
    print(f"\n{row['method']}: speechmerge {sm['wall_s']:.1f} s (CPU {sm['cpu_s']:.1f} s) {sm['peak_rss_gb']:.2f} GB | "
          f"mergekit {mk['wall_s']:.1f} s (CPU {mk['cpu_s']:.1f} s) {mk['peak_rss_gb']:.2f} GB | "
          f"max|diff| {d['max_abs']:.3g} ({d['worst']}), {d['n_diff']} of {d['numel']} entries differ, "
          f"rel Frobenius {d['rel_fro']:.3g} (of the merged delta {d['rel_fro_delta']:.3g})", flush=True)  # fmt: skip
    if d["only_a"] or d["only_b"]:
        print(f"  tensors only in mergekit: {d['only_a'][:5]}; only in speechmerge: {d['only_b'][:5]}")
    if "diff_seeds" in row:
        s = row["diff_seeds"]
        print(f"  random masks: non-zero merged deltas mergekit {d['nonzero_delta_a']:.4f}, speechmerge "
              f"{d['nonzero_delta_b']:.4f}; ‖Δ‖ mergekit {d['delta_norm_a']:.4g}, speechmerge {d['delta_norm_b']:.4g}; "
              f"difference to mergekit {d['rel_fro_delta']:.3g} of ‖Δ‖, between two speechmerge seeds "
              f"{s['rel_fro_delta']:.3g} of ‖Δ‖ (same mask impossible: compare these statistics)")  # fmt: skip


def summary(results: list[dict]) -> None:
    print(
        "\n| method | speechmerge s (CPU s) | mergekit s (CPU s) | speedup | speechmerge GB | mergekit GB | max abs diff | entries differing | rel. Frobenius | of Δ |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if "diff" not in r:
            failed = [t for t in ("speechmerge", "mergekit") if "failed" in r[t]]
            print(f"| {r['method']} | {' and '.join(failed)} failed (see above) | | | | | | | | |")
            continue
        sm, mk, d = r["speechmerge"], r["mergekit"], r["diff"]
        print(f"| {r['method']} | {sm['wall_s']:.1f} ({sm['cpu_s']:.1f}) | {mk['wall_s']:.1f} ({mk['cpu_s']:.1f}) | "
              f"{mk['wall_s'] / sm['wall_s']:.1f}x | "
              f"{sm['peak_rss_gb']:.2f} | {mk['peak_rss_gb']:.2f} | {d['max_abs']:.2g} | {d['n_diff']:,} / {d['numel']:,} | "
              f"{d['rel_fro']:.2g} | {d['rel_fro_delta']:.2g} |")  # fmt: skip


if __name__ == "__main__":
    main()
