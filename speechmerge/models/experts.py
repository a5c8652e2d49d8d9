"""Experts fine-tuned elsewhere, brought into the pipeline as plain model folders.

``import_expert(source, base_dir, out_dir)`` reads one expert of a ``merge-study`` experiment and
writes ``out_dir`` as a model folder of the study's base (its config, generation config and
tokenizer files) holding the expert's full weights in float32, so that task vectors, merges and
decoding treat it like an expert the pipeline trained. ``source`` is:

* a Hugging Face model folder (``config.json`` + ``model.safetensors``, or sharded
  ``model.safetensors.index.json`` + shards);
* a single ``.safetensors`` file or a shard index (``*.safetensors.index.json``);
* a PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``: LoRA, AdaLoRA or
  any adapter ``peft`` can merge), materialised onto the base with ``merge_and_unload``.

Weights are safetensors only (no pickle). Keys and shapes must be the base's (``proj_out.weight``
is tied to the token embedding and may be absent); a missing, unexpected or mis-shaped tensor,
or a NaN / Inf, is an error naming the tensor and the source. An expert fine-tuned at Whisper's
30 s context is cropped like the base when the run crops the encoder (``audio.max_seconds``):
its encoder positions are cut to the base's, as the importer crops the base itself
(``speechmerge.models.crop``). ``expert_info.json`` records the source, its format, the SHA-256
of every file read, and the provenance.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from speechmerge.merging.safetensors_io import INDEX_NAME, WEIGHTS_NAME, weights_files
from speechmerge.models.crop import ENCODER_POSITIONS_KEY
from speechmerge.models.loading import TIED_KEY, TIED_TO, read_state_dict
from speechmerge.utils import atomic_path, provenance, write_json

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
EXPERT_INFO = "expert_info.json"


class ExpertError(ValueError):
    """An expert that cannot be brought in: names the source and, where it applies, the tensor."""


def expert_format(source: str | Path) -> str:
    """``adapter``, ``folder`` or ``safetensors`` (a file or a shard index); an error naming the
    source for anything else (a missing path, ``pytorch_model.bin`` only, an empty folder)."""
    path = Path(source)
    if not path.exists():
        raise ExpertError(f"expert {path}: not found")
    if path.is_dir():
        if (path / ADAPTER_CONFIG).is_file():
            return "adapter"
        if (path / WEIGHTS_NAME).is_file() or (path / INDEX_NAME).is_file():
            return "folder"
        found = sorted(p.name for p in path.iterdir())[:5]
        raise ExpertError(
            f"expert {path}: a folder without {WEIGHTS_NAME}, {INDEX_NAME} or {ADAPTER_CONFIG} (has {found}); "
            "weights are read from safetensors only (convert a pytorch_model.bin with save_pretrained"
            "(..., safe_serialization=True))"
        )
    if path.name.endswith(".safetensors") or path.name.endswith(".safetensors.index.json"):
        return "safetensors"
    raise ExpertError(f"expert {path}: not a safetensors file, shard index, model folder or adapter folder")


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _read_weights(source: Path) -> tuple[dict[str, torch.Tensor], list[Path]]:
    files = weights_files(source)
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        for k, t in read_state_dict(f).items():
            if k in sd:
                raise ExpertError(f"expert {source}: tensor {k!r} appears in two shards")
            sd[k] = t
    return sd, files


def _merged_adapter(source: Path, base_dir: Path) -> tuple[dict[str, torch.Tensor], list[Path]]:
    """The base with the adapter merged into its weights (``peft``'s ``merge_and_unload``)."""
    from peft import PeftModel
    from transformers import WhisperForConditionalGeneration

    base = WhisperForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32, use_safetensors=True)
    try:
        model = PeftModel.from_pretrained(base, str(source), is_trainable=False)
    except Exception as err:  # peft raises several types for a bad adapter
        raise ExpertError(f"expert {source}: cannot apply the adapter to the base {base_dir} ({err})") from None
    merged = model.merge_and_unload()
    files = [p for p in sorted(source.iterdir()) if p.is_file() and p.suffix in (".json", ".safetensors")]
    return {k: v.detach() for k, v in merged.state_dict().items()}, files


def _fit_to_base(sd: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """``sd`` with the base's keys, shapes and dtype (float32), the encoder positions cropped to
    the base's; errors name the tensor."""
    sd = dict(sd)
    tied = sd.pop(TIED_KEY, None)
    if tied is not None and TIED_TO in sd and not torch.equal(tied, sd[TIED_TO]):
        raise ExpertError(f"expert {source}: {TIED_KEY} differs from {TIED_TO}; only tied Whisper models are supported")
    missing = sorted(set(ref) - set(sd))
    unexpected = sorted(set(sd) - set(ref))
    if missing or unexpected:
        raise ExpertError(
            f"expert {source}: its tensors are not the base's: missing {missing[:3]}"
            f"{' ...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}"
            " (is it a fine-tuned copy of the study's base_model?)"
        )
    out = {}
    for k, want in ref.items():
        t = sd[k]
        if k == ENCODER_POSITIONS_KEY and t.dim() == 2 and t.shape[0] > want.shape[0] and t.shape[1:] == want.shape[1:]:
            t = t[: want.shape[0]]  # the study runs at a cropped context: keep the first positions
        if tuple(t.shape) != tuple(want.shape):
            raise ExpertError(
                f"expert {source}: tensor {k} has shape {list(t.shape)}, the base's has {list(want.shape)}"
            )
        t = t.to(torch.float32).contiguous()
        if not bool(torch.isfinite(t).all()):
            raise ExpertError(f"expert {source}: non-finite values (NaN or Inf) in tensor {k}")
        out[k] = t
    return out


def import_expert(source: str | Path, base_dir: str | Path, out_dir: str | Path, *, name: str = "") -> dict[str, Any]:
    """Write expert ``source`` as a model folder of the base ``base_dir`` into ``out_dir``
    (atomically); returns the record written to ``expert_info.json``."""
    from speechmerge.merging.engine import copy_config_files
    from speechmerge.merging.safetensors_io import write_safetensors

    t0 = time.perf_counter()
    source, base_dir, out_dir = Path(source), Path(base_dir), Path(out_dir)
    fmt = expert_format(source)
    ref = read_state_dict(base_dir / WEIGHTS_NAME)
    if fmt == "adapter":
        sd, files = _merged_adapter(source, base_dir)
    else:
        sd, files = _read_weights(source)
    weights = _fit_to_base(sd, ref, source)
    info = {
        "name": name,
        "source": str(source),
        "format": fmt,
        "files": {str(f): _sha256(f) for f in files},
        "base": str(base_dir),
        "n_tensors": len(weights),
        "n_params": sum(t.numel() for t in weights.values()),
        "changed_tensors": sum(not torch.equal(weights[k], ref[k]) for k in weights),
        "provenance": provenance(),
    }
    if info["changed_tensors"] == 0:
        log.warning("expert %s: every tensor equals the base's; its task vector is zero", source)
    meta = {"format": "pt", "speechmerge": json.dumps({"expert": name, "source": str(source), "format": fmt})}
    with atomic_path(out_dir, is_dir=True) as tmp:
        copy_config_files(base_dir, tmp)
        write_safetensors(tmp / WEIGHTS_NAME, weights, meta)
        info["wall_s"] = round(time.perf_counter() - t0, 3)
        write_json(tmp / EXPERT_INFO, info)
    log.info(
        "expert %s (%s) -> %s: %d tensors, %d changed", source, fmt, out_dir, info["n_tensors"], info["changed_tensors"]
    )
    return info
