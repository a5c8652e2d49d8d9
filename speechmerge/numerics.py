"""Results that do not depend on the CPU: the math libraries' code path, and what a job ran on.

PyTorch's CPU build picks its kernels by the CPU's instruction set: MKL (float32 GEMM), oneDNN
(convolutions) and ATen's own vectorised kernels (softmax, layer norm, element-wise ops) each
have an AVX2 and an AVX-512 path (and on CPUs with AMX, an AMX path), and they round
differently. ``numerics.cpu_isa: native`` (the default) lets each library take the best path the
CPU has. ``avx2`` pins all three to their AVX2 path through the switches the libraries offer:

* ``MKL_CBWR=AVX2`` — MKL's conditional numerical reproducibility;
* ``ONEDNN_MAX_CPU_ISA=AVX2`` — oneDNN's instruction-set cap;
* ``ATEN_CPU_CAPABILITY=avx2`` — PyTorch's kernel dispatch.

They are read when each library starts, so the workflow sets them in its own environment
(``rules/common.smk``) and every job inherits them. With the same library versions and thread
counts an AVX-512 CPU then computes what an AVX2 CPU does: the opt-in for comparing runs across
x86 CPUs of different generations, at a cost (float32 training 13 % slower on an AVX-512 EPYC,
38 % on an AMX Xeon; docs/benchmarks.md). With ``native`` a run is bit-identical on the same
machine; on another CPU cells move within their intervals (README, "Numerics"). Training also
runs with ``torch.use_deterministic_algorithms`` and a fixed thread count per job (``threads:``).

``precision`` (float32 | bfloat16 | auto) is the run's arithmetic: float32 everywhere, or
bfloat16 matrix products (training under autocast with float32 master weights; decoding with
bfloat16 weights). ``auto`` takes bfloat16 where the CPU has bf16 dot products (AVX512_BF16 or
AMX-BF16) and float32 elsewhere; each job resolves it on its own machine and records what it
used, and every table's footnote says it.

``machine()`` is what every result file records about where it was made (``utils.provenance``).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Mapping, MutableMapping

ISA_ENV: dict[str, dict[str, str]] = {
    "avx2": {"MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "native": {},
}
ENV_VARS = ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
DEFAULT_ISA = "native"
PRECISIONS = ("float32", "bfloat16", "auto")
#: what a training or decoding stage may ask for: the run's precisions and float16 (CUDA only)
TRAIN_PRECISIONS = (*PRECISIONS, "float16")
DEFAULT_PRECISION = "float32"
#: CPU flags that decide which code path the math libraries take.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx_vnni")


def cpu_isa(config: Mapping) -> str:
    isa = (config.get("numerics") or {}).get("cpu_isa", DEFAULT_ISA)
    if isa not in ISA_ENV:
        raise ValueError(f"config key 'numerics.cpu_isa': {isa!r} is not one of {sorted(ISA_ENV)}")
    return isa


def native_bf16() -> bool:
    """True if the CPU has bf16 dot-product instructions (AVX512_BF16 or AMX-BF16)."""
    flags = set(_cpu_flags())
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str | None, *, where: str = "precision", device=None) -> str:
    """``float32``, ``bfloat16`` or ``float16`` (CUDA only) for ``precision`` (None: the default,
    float32); ``auto`` -> ``bfloat16`` on a CPU with native bf16 dot products, else ``float32``."""
    precision = DEFAULT_PRECISION if precision is None else str(precision)
    if precision not in TRAIN_PRECISIONS:
        raise ValueError(f"config key {where!r}: {precision!r} is not one of {list(TRAIN_PRECISIONS)}")
    on_cuda = device is not None and getattr(device, "type", str(device).split(":")[0]) == "cuda"
    if precision == "auto":
        if on_cuda:  # every GPU since Ampere computes bf16; older ones stay float32
            import torch

            return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
        return "bfloat16" if native_bf16() else "float32"
    if precision == "float16" and not on_cuda:
        raise ValueError(f"config key {where!r}: float16 runs on CUDA only; use bfloat16 on the CPU")
    return precision


def apply_environment(config: Mapping, environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set the switches of ``numerics.cpu_isa`` in ``environ`` (the workflow's own environment,
    which every job inherits); ``native`` removes them. Returns what was set."""
    wanted = ISA_ENV[cpu_isa(config)]
    for var in ENV_VARS:
        if var in wanted:
            environ[var] = wanted[var]
        else:
            environ.pop(var, None)
    return dict(wanted)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in ISA_FLAGS if f in have]
    except OSError:
        pass
    return []


def machine() -> dict:
    """Where a result was made: device, CPU model and its relevant instruction-set flags, the
    switches above as this process saw them, and (when torch is loaded) the kernel path in use,
    the thread count and whether deterministic algorithms are on."""
    rec = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cpu_count": os.cpu_count(),
        "numerics_env": {v: os.environ.get(v) for v in ENV_VARS},
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        rec["torch_threads"] = torch.get_num_threads()
        rec["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
        try:
            rec["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        except Exception:  # older torch
            rec["torch_cpu_capability"] = None
        rec["device"] = "cuda" if torch.cuda.is_available() and torch.cuda.is_initialized() else "cpu"
        if rec["device"] == "cuda":
            from speechmerge.devices import gpu_info

            rec["gpu"] = gpu_info()
    return rec


def describe(machine_rec: Mapping) -> str:
    """One line for a table footnote: CPU and its code path, or the GPU with its driver, CUDA and
    cuDNN versions."""
    env = machine_rec.get("numerics_env") or {}
    path = machine_rec.get("torch_cpu_capability") or "?"
    pinned = "AVX2 code path pinned" if env.get("MKL_CBWR") == "AVX2" else "native code path"
    flags = "/".join(f for f in machine_rec.get("cpu_flags", []) if f.startswith(("avx512", "amx")))
    cpu = machine_rec.get("cpu", "?") + (f" ({flags})" if flags else "")
    gpu = machine_rec.get("gpu")
    if gpu:  # the GPU computed; the CPU only fed it
        return (
            f"{gpu.get('name')} ({gpu.get('memory_gb')} GB; driver {gpu.get('driver') or '?'}, CUDA "
            f"{gpu.get('cuda') or '?'}, cuDNN {gpu.get('cudnn') or '?'}) with {cpu}"
        )
    return f"{cpu}; {pinned} (kernels {path})"
