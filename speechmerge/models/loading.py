"""Load an imported (or fine-tuned) Whisper directory, optionally with replacement weights.

``load_whisper(model_dir, weights=None, dtype=torch.float32) -> (model, processor)``.
``weights`` is a safetensors file with a *full* state dict (merged models, zero-shot base
weights, ...). It must match the directory's architecture exactly: a missing, unexpected or
mis-shaped tensor, or a non-finite value, is an error naming the tensor. ``proj_out.weight`` is
tied to ``model.decoder.embed_tokens.weight``: it may be absent from the file; if present it must
equal the embedding (a tied model cannot hold two different matrices).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open

from speechmerge.names import model_dir_of

if TYPE_CHECKING:  # transformers is imported where a model is built (decoding does without it)
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

TIED_KEY = "proj_out.weight"
TIED_TO = "model.decoder.embed_tokens.weight"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (clear error for a missing or unreadable file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None


def check_full_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Validate ``sd`` against ``model``'s own keys and shapes; return it without the tied key."""
    expected = {k: v for k, v in model.state_dict().items() if k != TIED_KEY}
    sd = dict(sd)
    if TIED_KEY in sd:
        tied = sd.pop(TIED_KEY)
        if TIED_TO in sd and (tied.shape != sd[TIED_TO].shape or not torch.equal(tied, sd[TIED_TO])):
            raise ValueError(f"{source}: tensor {TIED_KEY} differs from {TIED_TO}, but the model ties them")
    missing = sorted(set(expected) - set(sd))
    if missing:
        raise ValueError(
            f"{source}: missing tensor {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    unexpected = sorted(set(sd) - set(expected))
    if unexpected:
        raise ValueError(
            f"{source}: unexpected tensor {unexpected[0]}"
            + (f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
        )
    for k, ref in expected.items():
        t = sd[k]
        if tuple(t.shape) != tuple(ref.shape):
            raise ValueError(f"{source}: tensor {k} has shape {list(t.shape)}, the model expects {list(ref.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{source}: tensor {k} has dtype {t.dtype}, expected a floating point type")
        if not torch.isfinite(t).all():
            raise ValueError(f"{source}: tensor {k} contains NaN or infinite values")
    return sd


def load_state_dict_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Copy a full state dict into ``model`` (cast to the model's dtypes), keeping the tie."""
    sd = check_full_state_dict(model, sd, source)
    result = model.load_state_dict(sd, strict=False)
    left = [k for k in result.missing_keys if k != TIED_KEY]
    if left or result.unexpected_keys:  # cannot happen after the check; guard against API drift
        raise RuntimeError(f"{source}: load_state_dict left missing {left} unexpected {result.unexpected_keys}")
    if model.proj_out.weight.data_ptr() != model.model.decoder.embed_tokens.weight.data_ptr():
        model.tie_weights()


def load_whisper(
    model_dir: str | os.PathLike, weights: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32
) -> tuple["WhisperForConditionalGeneration", "WhisperProcessor"]:
    """The model (eval mode) and processor of ``model_dir``; ``weights`` replaces all its weights.

    ``model_dir`` may also be a file inside the directory (e.g. its ``config.json``, as rules name it).
    """
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model_dir = model_dir_of(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not a model directory (no config.json)")
    state_dict = read_state_dict(weights) if weights is not None else None
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, use_safetensors=True)
    processor = WhisperProcessor.from_pretrained(model_dir)
    if state_dict is not None:
        load_state_dict_strict(model, state_dict, str(weights))
        del state_dict
    model.eval()
    return model, processor
