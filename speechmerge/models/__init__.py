"""Whisper models: import (``bundle:``, ``random:``, ``hf:``), CTranslate2 reader, loading helpers.

Public API::

    import_model(spec, out_dir, max_seconds=None, seed=0) -> dict   # writes an HF directory
    load_whisper(model_dir, weights=None, dtype=torch.float32) -> (model, processor)
    parse_spec(spec) -> ModelSpec
"""

from speechmerge.models.importer import import_model
from speechmerge.models.loading import load_state_dict_strict, load_whisper, read_state_dict
from speechmerge.models.spec import SCHEMES, ModelSpec, parse_spec

__all__ = [
    "import_model",
    "load_whisper",
    "load_state_dict_strict",
    "read_state_dict",
    "parse_spec",
    "ModelSpec",
    "SCHEMES",
]
