"""``import_model``: a model spec becomes a Hugging Face Whisper directory.

Output directory (written atomically: a temporary sibling renamed into place at the end)::

    config.json  generation_config.json  model.safetensors
    tokenizer.json  tokenizer_config.json  preprocessor_config.json  (processor files)
    import_info.json                         spec, n_params, sizes, timing, source sha256s
    import-{digest}.json                     what it was made from (models.spec.stamp_name)

``model.safetensors`` holds every tensor of ``WhisperForConditionalGeneration.state_dict()`` in
float32 except ``proj_out.weight``, which is tied to ``model.decoder.embed_tokens.weight``
(transformers re-ties it on load). Its metadata carries ``format=pt`` and a ``speechmerge`` JSON
record (spec, provenance).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

from speechmerge.merging.safetensors_io import write_safetensors
from speechmerge.models import crop
from speechmerge.models.bundle import locate_bundle
from speechmerge.models.convert import WHISPER_MAX_REVISION, WHISPER_SPEC, ct2_whisper_state_dict
from speechmerge.models.ct2 import read_ct2_model
from speechmerge.models.random_init import random_dims, random_state_dict
from speechmerge.models.spec import INFO_NAME, ModelSpec, import_request, parse_spec, stamp_name
from speechmerge.models.text import (
    EOT,
    SOT,
    build_tokenizer,
    complete_generation_config,
    token_id,
    whisper_generation_config,
)
from speechmerge.utils import atomic_path, provenance

log = logging.getLogger(__name__)

TIED_KEY = "proj_out.weight"
TIED_TO = "model.decoder.embed_tokens.weight"
WEIGHTS_NAME = "model.safetensors"
TEXT_BUNDLE = "whisper-base"  # tokenizer + suppress lists borrowed by random: models


@dataclass
class BuiltModel:
    """Everything a model directory is written from."""

    config: WhisperConfig
    state_dict: dict[str, torch.Tensor]
    generation_config: GenerationConfig
    processor: WhisperProcessor
    sources: dict[str, str] = field(default_factory=dict)  # source file -> sha256
    details: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)


def whisper_config(dims: dict[str, Any], tokenizer, gen: GenerationConfig) -> WhisperConfig:
    """``WhisperConfig`` from architecture ``dims`` with the tokenizer's special ids (multilingual).

    The suppress lists are repeated from the generation config, as in ``openai/whisper-base``'s
    config.json (WhisperConfig's default ``begin_suppress_tokens`` is the English-only one).
    """
    eot, sot = token_id(tokenizer, EOT), token_id(tokenizer, SOT)
    return WhisperConfig(
        **dims,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        begin_suppress_tokens=list(gen.begin_suppress_tokens),
        suppress_tokens=list(gen.suppress_tokens),
        architectures=["WhisperForConditionalGeneration"],
    )


def _ct2_text_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read CTranslate2 config: {err}") from None
    for key in ("suppress_ids", "suppress_ids_begin", "lang_ids"):
        if not isinstance(cfg.get(key), list):
            raise ValueError(f"{path}: key {key!r} missing or not a list")
    return cfg


def _text_assets(
    tokenizer_path: Path, ct2_config_path: Path, vocab_size: int, max_length: int, alignment_heads: bool = True
):
    """Tokenizer + generation config from the bundle's tokenizer.json and CTranslate2 config.json."""
    tokenizer, report = build_tokenizer(tokenizer_path, vocab_size)
    cfg = _ct2_text_config(ct2_config_path)
    gen = whisper_generation_config(
        tokenizer,
        max_length=max_length,
        suppress_tokens=cfg["suppress_ids"],
        begin_suppress_tokens=cfg["suppress_ids_begin"],
        alignment_heads=cfg.get("alignment_heads") if alignment_heads else None,
    )
    lang_ids = sorted(gen.lang_to_id.values())
    if lang_ids != sorted(cfg["lang_ids"]):
        raise ValueError(
            f"{ct2_config_path}: lang_ids ({len(cfg['lang_ids'])}) differ from the language tokens "
            f"of {tokenizer_path} ({len(lang_ids)})"
        )
    return tokenizer, gen, report


def build_bundle(name: str, *, progress: bool = True) -> BuiltModel:
    t0 = time.perf_counter()
    files, hashes = locate_bundle(name)
    t1 = time.perf_counter()
    ct2 = read_ct2_model(
        files.model_parts, expected_spec=WHISPER_SPEC, max_revision=WHISPER_MAX_REVISION, progress=progress
    )
    t2 = time.perf_counter()
    dims, sd = ct2_whisper_state_dict(ct2)
    ct2_info = {
        "binary_version": ct2.binary_version,
        "spec": ct2.spec_name,
        "revision": ct2.spec_revision,
        "n_variables": len(ct2.variables),
        "aliases": ct2.aliases,
    }
    del ct2
    t3 = time.perf_counter()
    tokenizer, gen, report = _text_assets(
        files.tokenizer, files.ct2_config, dims["vocab_size"], dims["max_target_positions"]
    )
    config = whisper_config(dims, tokenizer, gen)
    fe = crop.feature_extractor(dims["num_mel_bins"])
    processor = WhisperProcessor(feature_extractor=fe, tokenizer=tokenizer)
    t4 = time.perf_counter()
    return BuiltModel(
        config,
        sd,
        gen,
        processor,
        sources=hashes,
        details={"tokenizer": report, "ct2": ct2_info},
        timing={"locate_and_hash": t1 - t0, "read_ct2": t2 - t1, "convert": t3 - t2, "tokenizer": t4 - t3},
    )


def build_random(size: str, seed: int) -> BuiltModel:
    t0 = time.perf_counter()
    dims = random_dims(size)
    files, hashes = locate_bundle(TEXT_BUNDLE, model=False)
    # alignment heads of the bundle belong to Whisper base, not to this network
    tokenizer, gen, report = _text_assets(
        files.tokenizer, files.ct2_config, dims["vocab_size"], dims["max_target_positions"], alignment_heads=False
    )
    config = whisper_config(dims, tokenizer, gen)
    t1 = time.perf_counter()
    sd = random_state_dict(config, seed)
    t2 = time.perf_counter()
    processor = WhisperProcessor(feature_extractor=crop.feature_extractor(dims["num_mel_bins"]), tokenizer=tokenizer)
    return BuiltModel(
        config,
        sd,
        gen,
        processor,
        sources=hashes,
        details={"tokenizer": report, "seed": seed},
        timing={"tokenizer": t1 - t0, "init": t2 - t1},
    )


def _hash_files(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.iterdir()):
        if p.is_file() and p.suffix in (".safetensors", ".json", ".txt", ".model"):
            with open(p, "rb") as fh:
                out[p.name] = hashlib.file_digest(fh, "sha256").hexdigest()
    return out


def build_hf(ref: str) -> BuiltModel:
    """``from_pretrained`` on a local directory or a hub id (cache or network), safetensors only."""
    t0 = time.perf_counter()
    try:
        model = WhisperForConditionalGeneration.from_pretrained(ref, dtype=torch.float32, use_safetensors=True)
        processor = WhisperProcessor.from_pretrained(ref)
    except OSError as err:
        raise OSError(f"hf:{ref}: cannot load a Whisper model and processor ({err})") from err
    t1 = time.perf_counter()
    config = model.config
    gen = model.generation_config
    filled = complete_generation_config(gen, processor.tokenizer, config.max_target_positions)
    if filled:
        log.warning("hf:%s: generation config lacked %s; filled from the tokenizer", ref, ", ".join(filled))
    sd = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    proj = sd.pop(TIED_KEY, None)
    if proj is not None and not torch.equal(proj, sd[TIED_TO]):
        raise ValueError(f"hf:{ref}: {TIED_KEY} differs from {TIED_TO}; only tied Whisper models are supported")
    config.tie_word_embeddings = True
    local = Path(ref)
    sources = (
        _hash_files(local) if local.is_dir() else {"hub_id": ref, "commit": str(getattr(config, "_commit_hash", None))}
    )
    return BuiltModel(
        config,
        sd,
        gen,
        processor,
        sources=sources,
        details={"generation_fields_filled": filled},
        timing={"load": t1 - t0},
    )


def check_state_dict(config: WhisperConfig, sd: dict[str, torch.Tensor], where: str) -> None:
    """Keys and shapes of ``sd`` must be exactly those of ``WhisperForConditionalGeneration(config)``."""
    with torch.device("meta"):
        ref = WhisperForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in ref.state_dict().items() if k != TIED_KEY}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{where}: state dict does not match WhisperForConditionalGeneration: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for k, shape in expected.items():
        if tuple(sd[k].shape) != shape:
            raise ValueError(f"{where}: tensor {k} has shape {list(sd[k].shape)}, expected {list(shape)}")


def write_model_dir(built: BuiltModel, out_dir: str | Path, info: dict[str, Any], t_start: float) -> None:
    """Write the HF directory atomically; completes ``info`` (files, sizes, timing) and writes it last."""
    out_dir = Path(out_dir)
    meta = {
        "format": "pt",
        "speechmerge": json.dumps(
            {
                "spec": info["spec"],
                "max_seconds": info["max_seconds"],
                "seed": info["seed"],
                "provenance": info["provenance"],
            },
            default=str,
        ),
    }
    with atomic_path(out_dir, is_dir=True) as tmp:
        t_write = time.perf_counter()
        built.config.save_pretrained(tmp)
        built.generation_config.save_pretrained(tmp)
        built.processor.save_pretrained(tmp)
        write_safetensors(tmp / WEIGHTS_NAME, built.state_dict, meta)  # fixed order: byte-reproducible
        request = import_request(info["spec"], info["max_seconds"], info["seed"])
        (tmp / stamp_name(request)).write_text(json.dumps(request, indent=2) + "\n")
        info["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        info["size_bytes"] = sum(info["files"].values())
        now = time.perf_counter()
        info["timing_s"] = {**info.get("timing_s", {}), "write": now - t_write, "total": now - t_start}
        (tmp / INFO_NAME).write_text(json.dumps(info, indent=2, default=str) + "\n")


def import_model(
    spec: str | ModelSpec,
    out_dir: str | Path,
    max_seconds: int | None = None,
    seed: int = 0,
    *,
    progress: bool = True,
    extra_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the model named by ``spec`` and write it to ``out_dir``; return the import info.

    ``max_seconds`` crops the encoder context (see :mod:`speechmerge.models.crop`); ``seed``
    matters for ``random:`` only. ``extra_info`` is merged into ``import_info.json``
    (e.g. the workflow's config hash).
    """
    parsed = parse_spec(spec)
    if max_seconds is not None:
        crop.check_max_seconds(max_seconds)  # fail before the (slow) build; the model's limit is checked later
    t0 = time.perf_counter()
    if parsed.scheme == "bundle":
        built = build_bundle(parsed.ref, progress=progress)
    elif parsed.scheme == "random":
        built = build_random(parsed.ref, seed)
    else:
        built = build_hf(parsed.ref)
    if max_seconds is not None:
        n_pos = crop.crop_state_dict(built.config, built.state_dict, max_seconds)
        fe = crop.feature_extractor(built.config.num_mel_bins, crop.chunk_seconds(built.config))
        built.processor = WhisperProcessor(feature_extractor=fe, tokenizer=built.processor.tokenizer)
        log.info("cropped encoder context to %s s (%d positions)", max_seconds, n_pos)
    check_state_dict(built.config, built.state_dict, parsed.raw)
    t1 = time.perf_counter()
    n_params = sum(t.numel() for t in built.state_dict.values())
    info: dict[str, Any] = {
        "spec": parsed.raw,
        "scheme": parsed.scheme,
        "max_seconds": max_seconds,
        "seed": seed,
        "n_params": n_params,
        "n_tensors": len(built.state_dict) + 1,  # + the tied proj_out.weight
        "n_tensors_stored": len(built.state_dict),
        "tied": {TIED_KEY: TIED_TO},
        "architecture": {
            k: getattr(built.config, k)
            for k in (
                "vocab_size",
                "d_model",
                "encoder_layers",
                "decoder_layers",
                "encoder_attention_heads",
                "decoder_attention_heads",
                "encoder_ffn_dim",
                "decoder_ffn_dim",
                "num_mel_bins",
                "max_source_positions",
                "max_target_positions",
            )
        },
        "chunk_seconds": crop.chunk_seconds(built.config),
        "sources": built.sources,
        "details": built.details,
        "provenance": provenance(),
        **(extra_info or {}),
    }
    info["timing_s"] = {**built.timing, "build": t1 - t0}
    write_model_dir(built, out_dir, info, t0)
    log.info(
        "imported %s -> %s: %.1f M parameters, %.1f MB, %.1f s",
        parsed.raw,
        out_dir,
        n_params / 1e6,
        info["size_bytes"] / 1e6,
        info["timing_s"]["total"],
    )
    return info
