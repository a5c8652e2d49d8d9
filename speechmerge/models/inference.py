"""Whisper for decoding in plain PyTorch: the model, its log-mel front end and its detokeniser,
without importing ``transformers``.

Why: importing transformers' ``WhisperForConditionalGeneration`` takes 2.5–3 s in a fresh
process (it brings ``torch.distributed.tensor``, ``torch._dynamo``, sympy and ``scipy.optimize``
with it), about a third of a short evaluation job; every evaluation, dev-selection and
experts-dev job pays it. Decoding needs none of that.

What is the same as transformers 5 (SDPA attention, inference), op for op, so that encoder
states, logits and therefore tokens are bit-identical (``tests/test_inference.py`` checks
against ``WhisperForConditionalGeneration``, ``WhisperFeatureExtractor`` and ``WhisperTokenizer``):

* parameter names (``model.encoder.*``, ``model.decoder.*``, ``proj_out.weight`` tied to the
  token embedding), so the same state dicts load;
* attention: the query is scaled by ``head_dim ** -0.5`` *before* SDPA, which then runs with
  ``scale=1``; the decoder's self-attention over several new positions with an empty cache is
  ``is_causal=True`` without a mask; one new position, the encoder and the cross-attention run
  without mask or causal flag; the cache appends keys and values with ``torch.cat``;
* pre-norm layers, exact GELU, sinusoidal encoder positions as stored in the checkpoint;
* the log-mel front end is transformers' PyTorch path (``torch.stft`` with a periodic Hann
  window, power spectrum without the last frame, Slaney mel filters, log10 clamped at 1e-10 and
  at the clip's maximum − 8, then (x + 4) / 4);
* detokenising is the ``tokenizers`` decoder of the model's ``tokenizer.json`` with special
  tokens skipped and timestamp tokens removed, as ``WhisperTokenizer.batch_decode`` does.

Training keeps transformers' model (its loss, PEFT wrappers and checkpoint format).

Public: ``load_for_decoding(model_dir, weights=None) -> (WhisperDecoderModel, Frontend)``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from speechmerge.names import model_dir_of

TIMESTAMP = re.compile(r"<\|(\d+\.\d+)\|>")
GENERATION_KEYS = (
    "decoder_start_token_id",
    "eos_token_id",
    "pad_token_id",
    "no_timestamps_token_id",
    "lang_to_id",
    "task_to_id",
    "suppress_tokens",
    "begin_suppress_tokens",
)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Dims:
    """The architecture fields of a Whisper ``config.json``."""

    d_model: int
    encoder_layers: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_layers: int
    decoder_attention_heads: int
    decoder_ffn_dim: int
    num_mel_bins: int
    max_source_positions: int
    max_target_positions: int
    vocab_size: int
    pad_token_id: int | None = None

    @classmethod
    def from_config(cls, cfg: dict, source: str) -> Dims:
        act = cfg.get("activation_function", "gelu")
        if act != "gelu":
            raise ValueError(f"{source}: activation_function {act!r} is not supported for decoding (only 'gelu')")
        if cfg.get("scale_embedding", False):
            raise ValueError(f"{source}: scale_embedding is not supported for decoding")
        fields = [f for f in cls.__dataclass_fields__ if f != "pad_token_id"]
        missing = [f for f in fields if f not in cfg]
        if missing:
            raise ValueError(f"{source}: config lacks {missing}")
        return cls(**{f: int(cfg[f]) for f in fields}, pad_token_id=cfg.get("pad_token_id"))


# --------------------------------------------------------------------------- modules


def _embedding(n: int, dim: int, padding_idx: int | None, device) -> nn.Embedding:
    """An embedding without its random initialisation (its weights are always loaded; on the
    meta device ``normal_`` would import ``torch._dynamo``)."""
    return nn.Embedding(n, dim, padding_idx, _weight=torch.empty(n, dim, device=device))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, device=None):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        if self.head_dim * heads != dim:
            raise ValueError(f"d_model {dim} is not divisible by {heads} heads")
        self.scaling = self.head_dim**-0.5
        self.q_proj = nn.Linear(dim, dim, device=device)
        self.k_proj = nn.Linear(dim, dim, bias=False, device=device)
        self.v_proj = nn.Linear(dim, dim, device=device)
        self.out_proj = nn.Linear(dim, dim, device=device)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], -1, self.heads, self.head_dim).transpose(1, 2).contiguous()

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._heads(self.k_proj(x)), self._heads(self.v_proj(x))

    def forward(
        self, x: torch.Tensor, k: torch.Tensor | None = None, v: torch.Tensor | None = None, *, causal: bool = False
    ) -> torch.Tensor:
        """Attention of ``x`` over ``k``/``v`` (its own projections when not given)."""
        q = self._heads(self.q_proj(x) * self.scaling)
        if k is None:
            k, v = self.keys_values(x)
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0, is_causal=causal and q.shape[2] > 1)
        out = out.transpose(1, 2).contiguous()
        return self.out_proj(out.reshape(*x.shape[:-1], -1).contiguous())


class EncoderLayer(nn.Module):
    def __init__(self, d: Dims, device=None):
        super().__init__()
        self.self_attn = Attention(d.d_model, d.encoder_attention_heads, device)
        self.self_attn_layer_norm = nn.LayerNorm(d.d_model, device=device)
        self.fc1 = nn.Linear(d.d_model, d.encoder_ffn_dim, device=device)
        self.fc2 = nn.Linear(d.encoder_ffn_dim, d.d_model, device=device)
        self.final_layer_norm = nn.LayerNorm(d.d_model, device=device)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.self_attn(self.self_attn_layer_norm(h))
        return h + self.fc2(F.gelu(self.fc1(self.final_layer_norm(h))))


class Encoder(nn.Module):
    def __init__(self, d: Dims, device=None):
        super().__init__()
        self.conv1 = nn.Conv1d(d.num_mel_bins, d.d_model, kernel_size=3, padding=1, device=device)
        self.conv2 = nn.Conv1d(d.d_model, d.d_model, kernel_size=3, stride=2, padding=1, device=device)
        self.embed_positions = _embedding(d.max_source_positions, d.d_model, None, device)
        self.layers = nn.ModuleList(EncoderLayer(d, device) for _ in range(d.encoder_layers))
        self.layer_norm = nn.LayerNorm(d.d_model, device=device)

    def forward(self, features: torch.Tensor) -> SimpleNamespace:
        n = self.embed_positions.num_embeddings
        if features.shape[-1] != 2 * n:
            raise ValueError(f"the encoder takes {2 * n} mel frames, got {features.shape[-1]}")
        # positions-major and contiguous from here on: every layer norm and product then reads
        # dense rows instead of copying a transposed view (speechmerge.training.layout likewise)
        h = F.gelu(self.conv2(F.gelu(self.conv1(features)))).transpose(1, 2).contiguous()
        h = h + self.embed_positions(torch.arange(n, device=h.device))
        for layer in self.layers:
            h = layer(h)
        return SimpleNamespace(last_hidden_state=self.layer_norm(h))


class DecoderLayer(nn.Module):
    def __init__(self, d: Dims, device=None):
        super().__init__()
        self.self_attn = Attention(d.d_model, d.decoder_attention_heads, device)
        self.self_attn_layer_norm = nn.LayerNorm(d.d_model, device=device)
        self.encoder_attn = Attention(d.d_model, d.decoder_attention_heads, device)
        self.encoder_attn_layer_norm = nn.LayerNorm(d.d_model, device=device)
        self.fc1 = nn.Linear(d.d_model, d.decoder_ffn_dim, device=device)
        self.fc2 = nn.Linear(d.decoder_ffn_dim, d.d_model, device=device)
        self.final_layer_norm = nn.LayerNorm(d.d_model, device=device)


class KVCache:
    """Keys and values per decoder layer: self-attention (grows by ``torch.cat``) and
    cross-attention (computed once from the encoder states)."""

    def __init__(self, n_layers: int):
        self.self_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers
        self.cross_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers

    @property
    def length(self) -> int:
        first = self.self_kv[0]
        return 0 if first is None else int(first[0].shape[2])

    def fill_cross(self, decoder: "Decoder", states: torch.Tensor, rows: torch.Tensor) -> None:
        """Cross-attention keys and values of every layer for decoding rows whose encoder states
        are ``states[rows]``: projected once per distinct utterance, then copied to the rows
        (two tasks of one utterance share its keys and values)."""
        for i, layer in enumerate(decoder.layers):
            k, v = layer.encoder_attn.keys_values(states)
            self.cross_kv[i] = (k.index_select(0, rows), v.index_select(0, rows))

    def reorder_cache(self, rows: torch.Tensor) -> None:
        """Keep the batch rows ``rows`` (in that order) of every cached tensor."""
        for store in (self.self_kv, self.cross_kv):
            for i, kv in enumerate(store):
                if kv is not None:
                    store[i] = (kv[0].index_select(0, rows), kv[1].index_select(0, rows))


class Decoder(nn.Module):
    def __init__(self, d: Dims, device=None):
        super().__init__()
        self.embed_tokens = _embedding(d.vocab_size, d.d_model, d.pad_token_id, device)
        self.embed_positions = _embedding(d.max_target_positions, d.d_model, None, device)
        self.layers = nn.ModuleList(DecoderLayer(d, device) for _ in range(d.decoder_layers))
        self.layer_norm = nn.LayerNorm(d.d_model, device=device)

    def forward(
        self, *, input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor, past_key_values: KVCache, **_
    ) -> SimpleNamespace:
        """Hidden states of the new positions ``input_ids``; ``past_key_values`` is updated."""
        cache = past_key_values
        start = cache.length
        pos = torch.arange(input_ids.shape[1], device=input_ids.device) + start
        h = self.embed_tokens(input_ids) + self.embed_positions.weight[pos.unsqueeze(0).repeat(input_ids.shape[0], 1)]
        for i, layer in enumerate(self.layers):
            x = layer.self_attn_layer_norm(h)
            k, v = layer.self_attn.keys_values(x)
            if cache.self_kv[i] is not None:
                k, v = torch.cat([cache.self_kv[i][0], k], dim=-2), torch.cat([cache.self_kv[i][1], v], dim=-2)
            cache.self_kv[i] = (k, v)
            h = h + layer.self_attn(x, k, v, causal=start == 0)
            if cache.cross_kv[i] is None:
                cache.cross_kv[i] = layer.encoder_attn.keys_values(encoder_hidden_states)
            h = h + layer.encoder_attn(layer.encoder_attn_layer_norm(h), *cache.cross_kv[i])
            h = h + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(h))))
        return SimpleNamespace(last_hidden_state=self.layer_norm(h))


class WhisperDecoderModel(nn.Module):
    """Whisper's encoder, decoder and output projection with transformers' parameter names,
    plus what decoding reads: ``config`` (the ``config.json`` fields) and ``generation_config``
    (the ``generation_config.json`` fields). Inference only (no dropout, no loss). Built with
    ``device="meta"``, its parameters are placeholders until a state dict is assigned."""

    def __init__(self, dims: Dims, config: dict, generation_config: dict, device=None):
        super().__init__()
        self.dims = dims
        self.config = SimpleNamespace(**config)
        self.generation_config = SimpleNamespace(**{k: generation_config.get(k) for k in GENERATION_KEYS})
        self.model = nn.Module()
        self.model.encoder = Encoder(dims, device)
        self.model.decoder = Decoder(dims, device)
        self.proj_out = nn.Linear(dims.d_model, dims.vocab_size, bias=False, device=device)
        self.proj_out.weight = self.model.decoder.embed_tokens.weight

    def get_encoder(self) -> Encoder:
        return self.model.encoder

    def get_decoder(self) -> Decoder:
        return self.model.decoder

    def new_cache(self) -> KVCache:
        return KVCache(self.dims.decoder_layers)

    def tie_weights(self) -> None:
        self.proj_out.weight = self.model.decoder.embed_tokens.weight


# --------------------------------------------------------------------------- front end


def hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = 3.0 * hz / 200.0
    above = hz >= 1000.0
    log_step = 27.0 / np.log(6.4)
    return np.where(above, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * log_step, mel)


def mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = 200.0 * mel / 3.0
    above = mel >= 15.0
    log_step = np.log(6.4) / 27.0
    return np.where(above, 1000.0 * np.exp(log_step * (mel - 15.0)), hz)


def slaney_mel_filters(n_freqs: int, n_mels: int, sampling_rate: int, f_min: float = 0.0, f_max: float = 8000.0):
    """Triangular filters ``(n_freqs, n_mels)`` on Slaney's mel scale, area-normalised (Slaney)."""
    fft_freqs = np.linspace(0, sampling_rate // 2, n_freqs)
    mel_points = np.linspace(hz_to_mel_slaney(f_min), hz_to_mel_slaney(f_max), n_mels + 2)
    edges = mel_to_hz_slaney(mel_points)
    widths = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(np.zeros(1), np.minimum(down, up))
    return filters * (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[None, :]


class Frontend:
    """Log-mel features and detokenising for one model directory (``preprocessor``/``processor``
    config and ``tokenizer.json``). Attributes as decoding reads them: ``feature_extractor``
    (``hop_length``, ``sampling_rate``, ``feature_size``, ``n_fft``) and ``batch_decode``."""

    def __init__(self, model_dir: Path):
        fe = _feature_config(model_dir)
        self.feature_extractor = SimpleNamespace(
            feature_size=int(fe.get("feature_size", 80)),
            sampling_rate=int(fe.get("sampling_rate", 16000)),
            hop_length=int(fe.get("hop_length", 160)),
            n_fft=int(fe.get("n_fft", 400)),
            dither=float(fe.get("dither", 0.0)),
        )
        if self.feature_extractor.dither != 0.0:
            raise ValueError(f"{model_dir}: feature extractor dither {self.feature_extractor.dither} is not supported")
        f = self.feature_extractor
        self.mel_filters = torch.from_numpy(slaney_mel_filters(1 + f.n_fft // 2, f.feature_size, f.sampling_rate)).to(
            torch.float32
        )
        tok = model_dir / "tokenizer.json"
        if not tok.is_file():
            raise FileNotFoundError(f"{model_dir}: no tokenizer.json")
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tok))

    def log_mel(self, waves: Sequence[np.ndarray], n_samples: int, device=None) -> torch.Tensor:
        """``(len(waves), n_mels, n_samples // hop)`` float32 on ``device`` (None: the CPU): each
        wave zero-padded or cut to ``n_samples``, the clips of one call computed as one batch
        (on the device: the STFT and the mel projection run where the model is)."""
        f = self.feature_extractor
        batch = np.zeros((len(waves), n_samples), dtype=np.float32)
        for i, w in enumerate(waves):
            w = np.asarray(w, dtype=np.float32).reshape(-1)[:n_samples]
            batch[i, : len(w)] = w
        wave = torch.from_numpy(batch)
        mel = self.mel_filters
        if device is not None and torch.device(device).type != "cpu":
            wave, mel = wave.pin_memory().to(device, non_blocking=True), mel.to(device)
        window = torch.hann_window(f.n_fft, device=wave.device)
        stft = torch.stft(wave, f.n_fft, f.hop_length, window=window, return_complex=True)
        power = (stft[..., :-1].abs() ** 2).contiguous()
        log_spec = torch.clamp(mel.T @ power, min=1e-10).log10()
        top = log_spec.max(dim=2, keepdim=True)[0].max(dim=1, keepdim=True)[0]
        log_spec = torch.maximum(log_spec, top - 8.0)
        return (log_spec + 4.0) / 4.0

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        ids = sequences.tolist() if isinstance(sequences, torch.Tensor) else [list(s) for s in sequences]
        texts = self.tokenizer.decode_batch(ids, skip_special_tokens=skip_special_tokens)
        return [TIMESTAMP.sub("", t) for t in texts]


def _feature_config(model_dir: Path) -> dict:
    for name, key in (("preprocessor_config.json", None), ("processor_config.json", "feature_extractor")):
        path = model_dir / name
        if path.is_file():
            cfg = json.loads(path.read_text())
            cfg = cfg.get(key, {}) if key else cfg
            if cfg:
                return cfg
    raise FileNotFoundError(
        f"{model_dir}: no feature extractor settings (preprocessor_config.json or processor_config.json)"
    )


# --------------------------------------------------------------------------- loading


def load_for_decoding(
    model_dir: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> tuple[WhisperDecoderModel, Frontend]:
    """The model (``dtype``, float32 by default; eval mode) and front end of ``model_dir``;
    ``weights`` (a full state dict in safetensors) replaces the directory's own weights, checked
    as ``load_whisper`` checks them (every tensor present, shapes, finite values; errors name the
    file and tensor)."""
    from speechmerge.models.loading import check_full_state_dict, read_state_dict

    model_dir = model_dir_of(model_dir)
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{model_dir}: not a model directory (no config.json)")
    config = json.loads(cfg_path.read_text())
    gen_path = model_dir / "generation_config.json"
    generation = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    dims = Dims.from_config(config, str(cfg_path))
    source = Path(weights) if weights is not None else model_dir / "model.safetensors"
    state = read_state_dict(source)
    model = WhisperDecoderModel(dims, config, generation, device="meta")
    state = check_full_state_dict(model, state, str(source))
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True)
    model.tie_weights()
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise ValueError(f"{source}: tensor {left[0]} was not loaded")
    model.eval()
    if device is not None:
        model.to(device)
    return model, Frontend(model_dir)


def load_decoder(
    model_dir: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    beam_size: int = 1,
    device=None,
):
    """``(model, processor)`` for decoding on ``device`` (None: the CPU): this module's model for
    greedy decoding (every default; float32, bfloat16 or float16 weights), transformers' for beam
    search (``generate``)."""
    if beam_size == 1:
        return load_for_decoding(model_dir, weights, dtype=dtype, device=device)
    from speechmerge.models.loading import load_whisper

    model, processor = load_whisper(model_dir, weights, dtype=dtype)
    return (model.to(device) if device is not None else model), processor
