"""Where each stage computes: the ``device`` setting and the job's GPU.

Config: a top-level ``device`` (``cpu``, the default; ``cuda``; ``cuda:N``; ``auto`` = CUDA where
the job's machine has it, else the CPU) with per-stage overrides ``training.device``,
``evaluation.device`` (test sets, dev selection in merge jobs, the experts' dev scores) and
``merging.device`` (the SVD / Newton-Schulz merges). ``stage_device`` reads them;
``check_devices`` runs when the plan is built, so ``snakemake -n`` with ``cuda`` on a machine
without CUDA stops naming the key (``gpu.check: node`` defers that to the job's node: a cluster
whose submit host has no GPU). The CPU default computes exactly what it did before devices
existed: nothing moves, no setting changes.

In a job, ``job_device(name)`` turns the setting into a ``torch.device``. ``cuda`` takes a GPU
slot (``claim_gpu``): the job's node may run several GPU jobs (Snakemake's ``gpu`` resource
bounds how many); each locks one of ``gpu.jobs_per_gpu`` slots of one visible GPU in a lock
folder, so two jobs on one workstation get different GPUs, or share one only as configured.
The lock is held until the job ends. Under SLURM each job sees only its own GPUs
(``CUDA_VISIBLE_DEVICES``), so it takes the first.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Mapping

DEFAULT_DEVICE = "cpu"
STAGES = ("training", "evaluation", "merging")
_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
#: where the lock files of GPU slots live (one folder per machine; override with SPEECHMERGE_GPU_LOCKS)
LOCK_DIR_ENV = "SPEECHMERGE_GPU_LOCKS"


def check_name(name: str, where: str) -> str:
    name = str(name)
    if not _PATTERN.match(name):
        raise ValueError(f"config key {where!r}: {name!r} is not a device (auto, cpu, cuda or cuda:N)")
    return name


def stage_device(config: Mapping, stage: str) -> tuple[str, str]:
    """(the device setting of ``stage``, the config key it comes from)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {STAGES}")
    own = (config.get(stage) or {}).get("device")
    if own is not None:
        return check_name(own, f"{stage}.device"), f"{stage}.device"
    return check_name(config.get("device", DEFAULT_DEVICE), "device"), "device"


def may_use_cuda(name: str) -> bool:
    """Whether a setting can put a job on a GPU (``auto`` can, where the node has one)."""
    return name == "auto" or name.startswith("cuda")


def cuda_count() -> int:
    """CUDA devices this process can see (0 without a CUDA build of torch)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_devices(config: Mapping, *, count: int | None = None) -> None:
    """At plan time: every stage's ``cuda`` / ``cuda:N`` names a device this machine has, or a
    ``ValueError`` naming the key (skipped with ``gpu.check: node``)."""
    if (config.get("gpu") or {}).get("check", "plan") == "node":
        return
    for stage in STAGES:
        name, key = stage_device(config, stage)
        if not name.startswith("cuda"):
            continue
        n = cuda_count() if count is None else count
        if n == 0:
            raise ValueError(
                f"config key {key!r}: {name!r} but this machine has no CUDA device (torch "
                f"{_torch_build()}); use cpu or auto, or gpu.check: node where only the jobs' nodes have GPUs"
            )
        if ":" in name and int(name.split(":")[1]) >= n:
            raise ValueError(f"config key {key!r}: {name!r} but this machine has {n} CUDA device(s)")


def _torch_build() -> str:
    import torch

    return f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}"


def job_device(name: str | None, *, jobs_per_gpu: int = 1):
    """The ``torch.device`` a job computes on: ``cpu``; ``cuda:N`` as given; ``cuda`` a GPU slot
    claimed for this job (``claim_gpu``); ``auto`` the same where CUDA is there, else the CPU."""
    # cuBLAS gives the same results run to run only with a fixed workspace (read when CUDA starts)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    name = check_name(name or DEFAULT_DEVICE, "device")
    if name == "cpu" or (name == "auto" and cuda_count() == 0):
        return torch.device("cpu")
    if cuda_count() == 0:
        raise RuntimeError(f"device {name!r}: this node has no CUDA device (torch {_torch_build()})")
    if ":" in name:
        index = int(name.split(":")[1])
    else:
        index = claim_gpu(cuda_count(), jobs_per_gpu)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


_HELD: list = []  # lock files held for the process's lifetime
_CLAIMED: dict[str, int] = {}  # the GPU this process claimed (one slot per job, however often asked)


def claim_gpu(n_gpus: int, jobs_per_gpu: int = 1, lock_dir: str | os.PathLike | None = None) -> int:
    """Lock a free slot (``jobs_per_gpu`` per GPU) and return its GPU index, the least used GPU
    first; wait for one when every slot is taken. The lock is released when the process ends."""
    import fcntl
    import time

    if "gpu" in _CLAIMED:
        return _CLAIMED["gpu"]
    folder = Path(lock_dir or os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "speechmerge-gpu-locks")
    folder.mkdir(parents=True, exist_ok=True)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all").replace(",", "_") or "none"
    while True:
        for slot in range(max(1, int(jobs_per_gpu))):
            for gpu in range(n_gpus):  # slot-major: spread over the GPUs before sharing one
                fh = open(folder / f"{visible}-gpu{gpu}-slot{slot}.lock", "w")
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    fh.close()
                    continue
                fh.write(f"{os.getpid()}\n")
                fh.flush()
                _HELD.append(fh)
                _CLAIMED["gpu"] = gpu
                return gpu
        time.sleep(2.0)


def gpu_info() -> dict | None:
    """The GPU a process computes on, for provenance: name, memory, driver, CUDA and cuDNN
    versions (None where CUDA was not used)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {
        "name": props.name,
        "memory_gb": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "driver": _driver_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def _driver_version() -> str | None:
    try:
        with open("/proc/driver/nvidia/version") as fh:
            m = re.search(r"Kernel Module\s+(\S+)", fh.read())
            return m.group(1) if m else None
    except OSError:
        return None
