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

# One path component the pipeline builds from a config value: letters, digits, '_', '.', '-',
# starting with a letter or digit (so never '.', '..', a hidden name or an option-like '-x').
SAFE_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=@~+-]*")


class UnsafePathError(ValueError):
    """A path the pipeline was asked to write or remove that could reach outside its folder."""


def check_component(value: Any, where: str) -> str:
    """``value`` as one safe path component, else ``UnsafePathError`` naming ``where`` (a config
    key): no separator, not ``.`` or ``..``, not hidden, at most 200 characters."""
    text = str(value)
    if not SAFE_COMPONENT.fullmatch(text) or len(text) > 200 or ".." in text:
        raise UnsafePathError(
            f"config key '{where}': {text!r} becomes a file or folder name, so it must be one path component "
            "of letters, digits, '_', '.', '-' (starting with a letter or digit, no '..', at most 200 characters)"
        )
    return text


def _checked_output(path: str | os.PathLike) -> Path:
    """``path`` if writing or replacing it can only touch ``path`` itself: its last component is a
    real name (not '', '.', '..') and it does not resolve elsewhere than ``parent/name``."""
    path = Path(path)
    if path.name in ("", ".", "..") or path.name != Path(os.path.normpath(path)).name:
        raise UnsafePathError(f"refusing to write {str(path)!r}: it does not name a file or folder of its own")
    resolved_parent = path.parent.resolve()
    if path.is_symlink() or path.resolve() != resolved_parent / path.name:
        raise UnsafePathError(f"refusing to replace {path}: it is a link to {path.resolve()}")
    return path


def remove_output_tree(path: str | os.PathLike) -> None:
    """Remove a folder the pipeline wrote (a checkpoint folder, a replaced output), after the same
    check as ``atomic_path``: never a link, never '.', '..' or a path that resolves elsewhere."""
    path = _checked_output(path)
    if path.is_dir():
        shutil.rmtree(path)


class ConcurrentWriteError(FileExistsError):
    """Another process is writing the same output right now."""


def _temporary_pattern(path: Path) -> "re.Pattern[str]":
    """Names ``atomic_path`` gives the temporaries of ``path``: ``.{name}.{8 random chars}.tmp``."""
    return re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}{re.escape(TMP_SUFFIX)}")


def _lock(path: Path) -> int | None:
    """An exclusive, non-blocking ``flock`` on ``path`` (file or folder): the fd that holds it, or
    None when another process holds it (a live writer)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return -1  # vanished meanwhile: nothing holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_stale_temporaries(path: str | os.PathLike, *, keep: Path | None = None) -> list[Path]:
    """Remove what a killed writer of ``path`` left beside it: only names ``atomic_path`` makes
    for ``path`` (``.{name}.XXXXXXXX.tmp``), never another file, and never the temporary of a
    writer that is still running (it holds a lock on it): that raises ``ConcurrentWriteError``
    naming both. ``keep``: this writer's own temporary. Returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = _temporary_pattern(path)
    removed = []
    for entry in sorted(path.parent.iterdir()):
        if (keep is not None and entry.name == keep.name) or not pattern.fullmatch(entry.name):
            continue
        fd = _lock(entry) if not entry.is_symlink() else -1
        if fd is None:
            raise ConcurrentWriteError(
                f"{path}: another process is writing it now (its temporary {entry.name} is in use); "
                "wait for it to finish or write to another path"
            )
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        finally:
            if fd >= 0:
                os.close(fd)
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
    that a killed run left for the same ``path`` are removed first (``remove_stale_temporaries``);
    a writer of the same ``path`` that is still running makes this one fail at once
    (``ConcurrentWriteError``), before any work, instead of the two deleting each other's
    temporaries. ``path`` must name a file or folder of its own (not '.', '..', not a link):
    nothing but ``path`` itself is ever replaced. What is moved in gets the umask's permissions.
    """
    path = _checked_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temporaries(path):
        logging.getLogger("speechmerge").info("removed %s, left by an interrupted run", stale)
    umask = current_umask()
    try:
        if is_dir:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror} (in {path.parent})") from None
    lock = _lock(tmp)
    try:
        # a writer that started at the same moment: fail now rather than after all the work
        remove_stale_temporaries(path, keep=tmp)
        apply_umask(tmp, umask)
        yield tmp
        apply_umask(tmp, umask)
        if is_dir and path.exists():
            remove_output_tree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        if lock is not None and lock >= 0:
            os.close(lock)


def json_default(o: Any) -> Any:
    """How ``json.dumps`` writes what it cannot: numpy scalars as numbers, arrays and tensors as
    lists, sets and tuples as lists, anything else (paths, dtypes) as its string."""
    import numbers

    if isinstance(o, numbers.Integral):
        return int(o)
    if isinstance(o, numbers.Real):
        return float(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


class ResultFileError(ValueError):
    """A result file that cannot be read back (truncated, edited, not JSON)."""


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file; a file that is not valid JSON (cut short by a full disk or a kill, edited by
    hand, or not UTF-8) is a ``ResultFileError`` naming it, where and how to rebuild it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ResultFileError(f"{path}: not UTF-8 text (byte {err.start}); {_REBUILD.format(path=path)}") from None
    except json.JSONDecodeError as err:
        raise ResultFileError(
            f"{path}: not valid JSON (cut short by a kill or a full disk, or edited) at line {err.lineno}, "
            f"column {err.colno} ({err.msg}); {_REBUILD.format(path=path)}"
        ) from None


_REBUILD = "rebuild it (a results file: snakemake --forcerun {path})"


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
