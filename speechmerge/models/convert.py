"""CTranslate2 ``WhisperSpec`` variables -> ``WhisperForConditionalGeneration`` state dict.

The mapping inverts CTranslate2's ``WhisperLoader`` (``python/ctranslate2/converters/
transformers.py``: ``BartLoader.set_encoder/set_decoder/set_attention`` + Whisper's conv layers):

=====================================================  ==============================================
CTranslate2 (scope ``e`` = encoder, ``d`` = decoder)   transformers (``model.`` prefix)
=====================================================  ==============================================
e/conv1, e/conv2 {weight, bias}                        encoder.conv1, encoder.conv2
e/position_encodings/encodings                         encoder.embed_positions.weight (sinusoids)
e/layer_i/self_attention/linear_0 (fused [q;k;v])      encoder.layers.i.self_attn.{q,k,v}_proj
e/layer_i/self_attention/linear_1                      encoder.layers.i.self_attn.out_proj
e/layer_i/self_attention/layer_norm {gamma, beta}      encoder.layers.i.self_attn_layer_norm {weight, bias}
e/layer_i/ffn/linear_0, linear_1                       encoder.layers.i.fc1, fc2
e/layer_i/ffn/layer_norm                               encoder.layers.i.final_layer_norm
e/layer_norm                                           encoder.layer_norm
d/embeddings/weight                                    decoder.embed_tokens.weight (= proj_out.weight, tied)
d/position_encodings/encodings                         decoder.embed_positions.weight (learned)
d/layer_i/self_attention/...                           decoder.layers.i.self_attn... (as encoder)
d/layer_i/attention/linear_0                           decoder.layers.i.encoder_attn.q_proj
d/layer_i/attention/linear_1 (fused [k;v])             decoder.layers.i.encoder_attn.{k,v}_proj
d/layer_i/attention/linear_2                           decoder.layers.i.encoder_attn.out_proj
d/layer_i/attention/layer_norm                         decoder.layers.i.encoder_attn_layer_norm
d/layer_norm                                           decoder.layer_norm
d/projection/weight (alias of d/embeddings/weight)     proj_out.weight (tied, not stored)
=====================================================  ==============================================

Fused weights are row blocks: ``W_qkv = [W_q; W_k; W_v]`` (each ``d_model x d_model``) and
``b_qkv = [b_q; b_k; b_v]``. Whisper's key projection has no bias; CTranslate2's ``fuse_linear``
fills that slot with zeros. A non-zero key bias would be mathematically irrelevant
(q·(k + b) adds q·b to every score of a query row, which softmax cancels) but cannot be stored in
transformers' layout, so it is an error: the conversion is lossless or it fails.
All values are copied exactly (float16 -> float32 is value-preserving).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import torch

from speechmerge.models.ct2 import CT2FormatError, CT2Model

log = logging.getLogger(__name__)

WHISPER_SPEC = "WhisperSpec"
WHISPER_MAX_REVISION = 3
GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU

# Scalars of the spec that describe the graph, with the only values a Whisper model can have.
_EXPECTED_SCALARS = {
    "decoder/activation": GELU,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
    "decoder/start_from_zero_embedding": 0,
}
# Scalars that carry no weights (CTranslate2 runtime options); accepted with any value.
_IGNORED_SCALARS = {
    "decoder/alignment_heads",
    "decoder/alignment_layer",
    "decoder/multi_query_attention",
    "decoder/alibi_use_positive_positions",
    "decoder/scale_alibi",
    "decoder/layernorm_embedding",
    "decoder/project_in_out",
    "decoder/rotary_dim",
    "decoder/rotary_interleave",
    "decoder/rotary_scaling_type",
    "decoder/rotary_scaling_factor",
    "decoder/rotary_base",
    "decoder/parallel_residual",
    "decoder/shared_layer_norm",
    "decoder/num_heads_kv",
    "decoder/sliding_window",
}


def _layer_count(ct2: CT2Model, scope: str) -> int:
    pat = re.compile(rf"^{scope}/layer_(\d+)/")
    ids = {int(m.group(1)) for name in ct2.variables if (m := pat.match(name))}
    if not ids:
        raise CT2FormatError(f"{ct2.source}: no {scope} layers found")
    if ids != set(range(len(ids))):
        raise CT2FormatError(f"{ct2.source}: {scope} layer indices are not contiguous: {sorted(ids)}")
    return len(ids)


def whisper_dims(ct2: CT2Model) -> dict[str, Any]:
    """``WhisperConfig`` architecture arguments read off the variables' shapes and scalars."""
    emb = ct2.resolve("decoder/embeddings/weight")
    conv1 = ct2.resolve("encoder/conv1/weight")
    vocab, d_model = emb.shape
    return {
        "vocab_size": vocab,
        "d_model": d_model,
        "num_mel_bins": conv1.shape[1],
        "encoder_layers": _layer_count(ct2, "encoder"),
        "decoder_layers": _layer_count(ct2, "decoder"),
        "encoder_attention_heads": int(ct2.resolve("encoder/num_heads").scalar()),
        "decoder_attention_heads": int(ct2.resolve("decoder/num_heads").scalar()),
        "encoder_ffn_dim": ct2.resolve("encoder/layer_0/ffn/linear_0/weight").shape[0],
        "decoder_ffn_dim": ct2.resolve("decoder/layer_0/ffn/linear_0/weight").shape[0],
        "max_source_positions": ct2.resolve("encoder/position_encodings/encodings").shape[0],
        "max_target_positions": ct2.resolve("decoder/position_encodings/encodings").shape[0],
    }


class _Taker:
    """Hands out CTranslate2 variables as float32 tensors and remembers which were used."""

    def __init__(self, ct2: CT2Model):
        self.ct2 = ct2
        self.used: set[str] = set()

    def get(self, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        var = self.ct2.resolve(name)
        self.used.add(name)
        self.used.add(var.name)
        if var.dtype not in ("float32", "float16", "bfloat16"):
            raise CT2FormatError(
                f"{self.ct2.source}: {name} has dtype {var.dtype}; quantized models "
                "(int8/int16) cannot be converted losslessly"
            )
        if shape is not None and var.shape != tuple(shape):
            raise CT2FormatError(f"{self.ct2.source}: {name} has shape {list(var.shape)}, expected {list(shape)}")
        return torch.from_numpy(np.ascontiguousarray(var.to_float32()))


def ct2_whisper_state_dict(ct2: CT2Model) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Convert a parsed ``WhisperSpec`` model; return (config kwargs, float32 state dict).

    The state dict has every key of ``WhisperForConditionalGeneration.state_dict()`` except the
    tied ``proj_out.weight``. Every CTranslate2 variable must be used (or be a known scalar).
    """
    if ct2.spec_name != WHISPER_SPEC:
        raise CT2FormatError(f"{ct2.source}: model spec is {ct2.spec_name!r}, expected {WHISPER_SPEC!r}")
    if ct2.spec_revision > WHISPER_MAX_REVISION:
        raise CT2FormatError(
            f"{ct2.source}: WhisperSpec revision {ct2.spec_revision} is newer than the "
            f"supported revision {WHISPER_MAX_REVISION}"
        )
    for name, var in ct2.variables.items():
        if name.endswith("_scale"):
            raise CT2FormatError(
                f"{ct2.source}: {name} is a quantization scale; quantized models cannot be converted losslessly"
            )
    for name, want in _EXPECTED_SCALARS.items():
        if name in ct2.variables and int(ct2.variables[name].scalar()) != want:
            raise CT2FormatError(f"{ct2.source}: {name} = {ct2.variables[name].scalar()}, a Whisper model has {want}")

    dims = whisper_dims(ct2)
    d = dims["d_model"]
    t = _Taker(ct2)
    sd: dict[str, torch.Tensor] = {}

    def linear(src: str, dst: str, rows: int, cols: int, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = t.get(f"{src}/weight", (rows, cols))
        if bias:
            sd[f"{dst}.bias"] = t.get(f"{src}/bias", (rows,))

    def layer_norm(src: str, dst: str) -> None:
        sd[f"{dst}.weight"] = t.get(f"{src}/gamma", (d,))
        sd[f"{dst}.bias"] = t.get(f"{src}/beta", (d,))

    def split_rows(src: str, dst: str, names: tuple[str, ...], biasless: str = "k_proj") -> None:
        n = len(names)
        weight = t.get(f"{src}/weight", (n * d, d))
        bias = t.get(f"{src}/bias", (n * d,))
        for i, proj in enumerate(names):
            sd[f"{dst}.{proj}.weight"] = weight[i * d : (i + 1) * d].clone()
            b = bias[i * d : (i + 1) * d].clone()
            if proj == biasless:
                if torch.any(b != 0):
                    raise CT2FormatError(
                        f"{ct2.source}: {src}/bias has a non-zero key-projection block "
                        f"(max |b| = {b.abs().max().item():.3g}); Whisper's k_proj has no bias"
                    )
            else:
                sd[f"{dst}.{proj}.bias"] = b

    def attention_block(src: str, dst: str, cross: bool) -> None:
        if cross:
            linear(f"{src}/linear_0", f"{dst}.q_proj", d, d)
            split_rows(f"{src}/linear_1", dst, ("k_proj", "v_proj"))
            linear(f"{src}/linear_2", f"{dst}.out_proj", d, d)
        else:
            split_rows(f"{src}/linear_0", dst, ("q_proj", "k_proj", "v_proj"))
            linear(f"{src}/linear_1", f"{dst}.out_proj", d, d)

    def ffn(src: str, dst: str, ffn_dim: int) -> None:
        linear(f"{src}/linear_0", f"{dst}.fc1", ffn_dim, d)
        linear(f"{src}/linear_1", f"{dst}.fc2", d, ffn_dim)
        layer_norm(f"{src}/layer_norm", f"{dst}.final_layer_norm")

    n_mels = dims["num_mel_bins"]
    sd["model.encoder.conv1.weight"] = t.get("encoder/conv1/weight", (d, n_mels, 3))
    sd["model.encoder.conv1.bias"] = t.get("encoder/conv1/bias", (d,))
    sd["model.encoder.conv2.weight"] = t.get("encoder/conv2/weight", (d, d, 3))
    sd["model.encoder.conv2.bias"] = t.get("encoder/conv2/bias", (d,))
    sd["model.encoder.embed_positions.weight"] = t.get(
        "encoder/position_encodings/encodings", (dims["max_source_positions"], d)
    )
    for i in range(dims["encoder_layers"]):
        s, h = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        attention_block(f"{s}/self_attention", f"{h}.self_attn", cross=False)
        layer_norm(f"{s}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        ffn(f"{s}/ffn", h, dims["encoder_ffn_dim"])
    layer_norm("encoder/layer_norm", "model.encoder.layer_norm")

    sd["model.decoder.embed_tokens.weight"] = t.get("decoder/embeddings/weight", (dims["vocab_size"], d))
    sd["model.decoder.embed_positions.weight"] = t.get(
        "decoder/position_encodings/encodings", (dims["max_target_positions"], d)
    )
    for i in range(dims["decoder_layers"]):
        s, h = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        attention_block(f"{s}/self_attention", f"{h}.self_attn", cross=False)
        layer_norm(f"{s}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        attention_block(f"{s}/attention", f"{h}.encoder_attn", cross=True)
        layer_norm(f"{s}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
        ffn(f"{s}/ffn", h, dims["decoder_ffn_dim"])
    layer_norm("decoder/layer_norm", "model.decoder.layer_norm")

    _check_projection(ct2, t)
    t.used.update(n for n in ("encoder/num_heads", "decoder/num_heads", *_EXPECTED_SCALARS))
    leftovers = [n for n in ct2.variables if n not in t.used and n not in _IGNORED_SCALARS]
    if leftovers:
        raise CT2FormatError(
            f"{ct2.source}: variables not understood by the Whisper converter: "
            f"{', '.join(sorted(leftovers)[:10])}" + (" ..." if len(leftovers) > 10 else "")
        )
    return dims, sd


def _check_projection(ct2: CT2Model, t: _Taker) -> None:
    """``proj_out`` must be tied to the token embedding (alias, or an identical copy), without bias."""
    name = "decoder/projection/weight"
    if name in ct2.aliases:
        if ct2.aliases[name] != "decoder/embeddings/weight":
            raise CT2FormatError(
                f"{ct2.source}: {name} aliases {ct2.aliases[name]!r}, expected the token "
                "embedding (Whisper ties the output projection)"
            )
    elif name in ct2.variables:
        emb = ct2.variables["decoder/embeddings/weight"]
        if not np.array_equal(ct2.variables[name].to_float32(), emb.to_float32()):
            raise CT2FormatError(
                f"{ct2.source}: {name} differs from decoder/embeddings/weight; an untied "
                "output projection is not a Whisper model"
            )
        t.used.add(name)
    else:
        raise CT2FormatError(f"{ct2.source}: {name} is missing")
    bias = "decoder/projection/bias"
    if bias in ct2.variables:
        if np.any(ct2.variables[bias].to_float32() != 0):
            raise CT2FormatError(f"{ct2.source}: {bias} is non-zero; Whisper's proj_out has no bias")
        t.used.add(bias)
