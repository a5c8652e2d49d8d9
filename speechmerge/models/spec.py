"""Model specs: ``bundle:<name>``, ``random:<size>``, ``hf:<repo id or local path>``."""

from __future__ import annotations

from dataclasses import dataclass

SCHEMES = ("bundle", "random", "hf")


@dataclass(frozen=True)
class ModelSpec:
    scheme: str  # one of SCHEMES
    ref: str  # bundle name, random size, or hub id / local path
    raw: str  # the spec as given

    def __str__(self) -> str:
        return self.raw


def parse_spec(spec: str | ModelSpec) -> ModelSpec:
    """Split ``"scheme:ref"``; an unknown scheme or an empty reference is an error naming it.

    Only the first ``:`` separates, so ``hf:/abs/path`` and ``hf:C:/x`` keep their colons.
    Bundle names and random sizes are checked by the builders (which know the valid values).
    """
    if isinstance(spec, ModelSpec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(
            f"model spec {spec!r} is not of the form scheme:reference "
            f"(schemes: {', '.join(SCHEMES)}; e.g. bundle:whisper-base, random:tiny)"
        )
    scheme, ref = spec.split(":", 1)
    scheme, ref = scheme.strip().lower(), ref.strip()
    if scheme not in SCHEMES:
        raise ValueError(f"unknown model spec scheme {scheme!r} in {spec!r}; expected one of {', '.join(SCHEMES)}")
    if not ref:
        raise ValueError(f"model spec {spec!r} has an empty reference after '{scheme}:'")
    return ModelSpec(scheme, ref, spec)


# ----- what an imported model folder must have been made from ---------------------------------
INFO_NAME = "import_info.json"


def import_request(spec: str, max_seconds: float | None, seed: int) -> dict:
    """What the config asks an import to produce: the spec, the encoder context and (for
    ``random:`` models) the seed: the provenance an imported folder must match to be reused."""
    parsed = parse_spec(spec)
    return {"spec": parsed.raw, "max_seconds": max_seconds, "seed": seed if parsed.scheme == "random" else None}


def stamp_name(request: dict) -> str:
    """``import-{digest}.json``: a file the import writes into its folder, named by a digest of
    ``request``. Asking for it makes Snakemake rebuild a folder imported from another spec or
    context even when its own records of that folder are gone (a folder from elsewhere, a
    deleted ``.snakemake``)."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:12]
    return f"import-{digest}.json"


def is_stamp(name: str) -> bool:
    """Whether a file name is an import's provenance file (``stamp_name``)."""
    import re

    return re.fullmatch(r"import-[0-9a-f]{12}\.json", name) is not None


def check_import_target(out_dir: str, request: dict, *, key: str = "base_model") -> None:
    """Stop before any job when importing ``request`` into ``out_dir`` would read from, or
    replace, a folder the user owns: an ``hf:`` path inside, equal to or above ``out_dir``, or
    an existing ``out_dir`` that no import wrote (no ``import_info.json``). Snakemake removes a
    job's old outputs before it runs, so such a folder would be lost, or (when complete) used
    as if it had been imported with this config's crop."""
    from pathlib import Path

    out = Path(out_dir)
    parsed = parse_spec(request["spec"])
    if parsed.scheme == "hf" and Path(parsed.ref).exists():
        src, dst = Path(parsed.ref).resolve(), out.resolve()
        if src == dst or dst in src.parents or src in dst.parents:
            raise ValueError(
                f"config key '{key}.spec': {parsed.raw} reads {parsed.ref}, and the import writes {out_dir} "
                f"(base_model.name {out.name!r}); the import must not read the folder it replaces. Give "
                f"{key}.name another name (e.g. {out.name + '-imported'!r}) and keep the spec"
            )
    if out.is_dir() and any(out.iterdir()) and not (out / INFO_NAME).is_file():
        entries = sorted(p.name for p in out.iterdir())
        raise ValueError(
            f"config key '{key}.name': {out_dir} already holds files that no import wrote ({len(entries)} entries, "
            f"e.g. {entries[:3]}; no {INFO_NAME}), so the pipeline neither uses them as the imported base (their "
            f"spec and encoder context are unknown) nor replaces them. Give {key}.name another name; to import "
            f"this folder, set {key}.spec: hf:{out_dir}"
        )
