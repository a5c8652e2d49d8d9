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
