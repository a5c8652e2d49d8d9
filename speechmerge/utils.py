"""Small shared helpers: atomic writes, provenance records, logging for workflow scripts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

PROVENANCE_PACKAGES = (
    "speechmerge",
    "torch",
    "transformers",
    "datasets",
    "peft",
    "safetensors",
    "jiwer",
    "sacrebleu",
    "numpy",
    "snakemake",
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
    """What every result file records: config hash, package versions and the machine
    (``speechmerge.numerics.machine``: CPU, code path, threads), plus extras."""
    from speechmerge.numerics import machine

    rec: dict[str, Any] = {"versions": package_versions(), "machine": machine()}
    if config is not None:
        rec["config_hash"] = config_hash(config)
    rec.update(extra)
    return rec


TMP_SUFFIX = ".tmp"


def _temporary_pattern(path: Path) -> "re.Pattern[str]":
    """Names ``atomic_path`` gives the temporaries of ``path``: ``.{name}.{8 random chars}.tmp``."""
    return re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}{re.escape(TMP_SUFFIX)}")


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove what a killed writer of ``path`` left beside it: only names ``atomic_path`` makes
    for ``path`` (``.{name}.XXXXXXXX.tmp``), never another file. Returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = _temporary_pattern(path)
    removed = []
    for entry in path.parent.iterdir():
        if pattern.fullmatch(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def apply_umask(path: str | os.PathLike, umask: int | None = None) -> None:
    """Give ``path`` (and, for a directory, everything in it) the usual permissions under the
    umask: 0666 & ~umask for files, 0777 & ~umask for directories. Some writers (``mkstemp``,
    ``safetensors``) create files 0600 whatever the umask, which breaks shared and cluster use."""
    umask = current_umask() if umask is None else umask
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o777 & ~umask)
            for f in files:
                if not os.path.islink(os.path.join(root, f)):
                    os.chmod(os.path.join(root, f), 0o666 & ~umask)
        os.chmod(path, 0o777 & ~umask)
    elif path.exists() and not path.is_symlink():
        os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto ``path`` only if the block succeeds.

    Snakemake never sees a half-written output: on error the temporary is removed. Temporaries
    that a killed run left for the same ``path`` are removed first (``remove_stale_temporaries``).
    What is moved in gets the umask's permissions (``apply_umask``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temporaries(path):
        logging.getLogger("speechmerge").info("removed %s, left by an interrupted run", stale)
    umask = current_umask()
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    apply_umask(tmp, umask)
    try:
        yield tmp
        apply_umask(tmp, umask)
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
