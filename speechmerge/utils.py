"""Small shared helpers: atomic writes, provenance records, logging for workflow scripts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

PROVENANCE_PACKAGES = (
    "speechmerge", "torch", "transformers", "datasets", "peft", "safetensors",
    "jiwer", "sacrebleu", "numpy", "snakemake",
)


def config_hash(config: Any) -> str:
    """Stable short hash of a JSON-serialisable config (keys sorted)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def job_spec(smk: Any) -> dict[str, Any]:
    """A workflow script's ``params.spec`` plus the hash of the whole run config (provenance).

    The hash is added here rather than passed as a param, so that changing an unrelated part of
    the config (another merge, another sweep value) does not make Snakemake rerun this job.
    """
    spec = dict(smk.params.spec)
    if "config_hash" not in spec:
        spec["config_hash"] = config_hash(dict(getattr(smk, "config", {}) or {}))
    return spec


def package_versions(packages: tuple[str, ...] = PROVENANCE_PACKAGES) -> dict[str, str]:
    out = {}
    for name in packages:
        if name == "speechmerge":
            from speechmerge import __version__

            out[name] = __version__
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(config: Any = None, **extra: Any) -> dict[str, Any]:
    """What every result file records: config hash and package versions (plus extras)."""
    rec: dict[str, Any] = {"versions": package_versions()}
    if config is not None:
        rec["config_hash"] = config_hash(config)
    rec.update(extra)
    return rec


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto ``path`` only if the block succeeds.

    Snakemake never sees a half-written output: on error the temporary is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the usual permissions
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
    try:
        yield tmp
        if is_dir and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def setup_script_logging(log_path: str | os.PathLike | None) -> logging.Logger:
    """Send stderr (and the root logger) of a workflow script to its rule's log file."""
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "w", buffering=1)
        sys.stderr = stream
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    return logging.getLogger("speechmerge")


def set_threads(n: int | None) -> None:
    """Limit torch's (and OpenMP / BLAS) intra-op threads to what Snakemake gave the job.

    Sets ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS``, which torch reads
    when it is first imported, so a job that never needs torch (synthesis) does not pay its
    1.4 s import; if torch is already imported its thread count is set directly.
    """
    if n:
        n = max(1, int(n))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(n)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(n)
