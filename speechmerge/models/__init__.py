"""Whisper models: import (``bundle:``, ``random:``, ``hf:``), CTranslate2 reader, loading helpers.

Public API::

    import_model(spec, out_dir, max_seconds=None, seed=0) -> dict   # writes an HF directory
    load_whisper(model_dir, weights=None, dtype=torch.float32) -> (model, processor)
    parse_spec(spec) -> ModelSpec

The names are loaded on first use, so ``speechmerge.models.inference`` (decoding without
transformers) does not import transformers through this package.
"""

import importlib

_WHERE = {
    "import_model": "speechmerge.models.importer",
    "load_whisper": "speechmerge.models.loading",
    "load_state_dict_strict": "speechmerge.models.loading",
    "read_state_dict": "speechmerge.models.loading",
    "parse_spec": "speechmerge.models.spec",
    "ModelSpec": "speechmerge.models.spec",
    "SCHEMES": "speechmerge.models.spec",
}

__all__ = list(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
