"""Keep a job's freed memory in the process instead of handing it back to the kernel.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves every block above its
mmap threshold (128 KiB, adapting up to 32 MiB) with a fresh ``mmap`` and unmaps it on
``free``, and trims the heap's free top. A training step frees and re-allocates about 1 GB of
activations and gradients, so each step page-faults that memory in again, zero-filled by the
kernel: 100,000-250,000 minor faults per step of Whisper base at batch 8, 0.05-0.2 s of a
2.3-2.7 s step on 2 cores (``benchmarks/train_bench.py --allocator keep|system``).

:func:`keep_freed_memory` sets glibc's ``M_MMAP_MAX`` to 0 (every block from the heap) and its
``M_TRIM_THRESHOLD`` to the largest value (the heap is not trimmed), so the next step reuses the
pages. Arithmetic is untouched: results are bit-identical. The cost is that the process keeps
its peak footprint until it exits (measured: +3 % peak RSS for the default run's fine-tuning
jobs, 3,247 against 3,141 MB). Decoding jobs (evaluation, dev selection in merge jobs, the
experts' dev scores) set it too: each decoder step allocates and frees its keys, values and
logits, and the cross-attention keys and values of a batch are tens of MB per layer; 7-10 %
faster decoding of 48 utterances, both tasks, on one thread.

It does nothing on other C libraries, or when the user has set glibc's own switches
(``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``,
``GLIBC_TUNABLES``): those win.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
USER_SWITCHES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")
INT_MAX = 2**31 - 1


def _mallopt():
    """glibc's ``mallopt``, or None (another C library, or the user set glibc's own switches)."""
    if not sys.platform.startswith("linux") or any(v in os.environ for v in USER_SWITCHES):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- glibc only; musl has a mallopt that does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def return_freed_memory(threshold: int = 1 << 20) -> bool:
    """While a job streams data: blocks of ``threshold`` bytes and more get their own mapping,
    returned to the kernel when freed. glibc otherwise raises its mmap threshold after each such
    free (up to 32 MiB) and serves later blocks from the heap, where chunks of decoded audio and
    features fragment it: reading a split then grows the process with the split's length
    (``benchmarks/data_bench.py``). Call ``keep_freed_memory`` afterwards for the training steps."""
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, int(threshold)))


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (see the module docstring). Returns whether the
    switches were set: false on non-glibc systems or when the user set glibc's own."""
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, INT_MAX))
