"""Whisper training examples: decoder prompts, label masking, log-mel features, collation.

One utterance gives one example per configured task (``transcribe`` always; ``translate``
only when its language is not English, target = the English translation).

Decoder sequence (OpenAI Whisper's training format, no timestamps)::

    <|startoftranscript|> <|xx|> <|transcribe|>/<|translate|> <|notimestamps|>  t_1 ... t_n  <|endoftext|>

``xx`` is the *source* language for both tasks. The text tokens are
``tokenizer.encode(" " + text.strip())`` (leading space, as in OpenAI's data pipeline and as
Whisper emits at inference). Teacher forcing: ``decoder_input_ids = seq[:-1]``,
``labels = seq[1:]`` with the first ``len(prompt) - 1`` labels (which would be the language,
task and notimestamps tokens) set to -100, so the loss covers exactly t_1 ... t_n and
<|endoftext|>. Right padding uses <|endoftext|> as input and -100 as label; the decoder is
causal, so padding never influences the real positions and no attention mask is needed.

Encoder input: log-mel features (the model's ``WhisperFeatureExtractor``) of the audio padded
with zeros / trimmed to the model's context, ``config.max_source_positions * 2`` mel frames
(``* hop_length`` samples), e.g. 600 frames = 6 s for a cropped model, 3000 = 30 s for stock.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.utils.data

log = logging.getLogger(__name__)

TASKS = ("transcribe", "translate")
IGNORE_INDEX = -100
SOT, EOT, NO_TIMESTAMPS = "<|startoftranscript|>", "<|endoftext|>", "<|notimestamps|>"


def special_id(tokenizer, token: str) -> int:
    """Id of a special token; a clear error if the tokenizer does not know it."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise KeyError(f"tokenizer has no token {token!r} (unknown language code or non-Whisper tokenizer?)")
    return int(tid)


def prompt_ids(tokenizer, language: str, task: str) -> list[int]:
    """``[<|startoftranscript|>, <|language|>, <|task|>, <|notimestamps|>]`` as ids."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return [special_id(tokenizer, t) for t in (SOT, f"<|{language}|>", f"<|{task}|>", NO_TIMESTAMPS)]


def text_ids(tokenizer, text: str) -> list[int]:
    """Target text tokens (no special tokens), with Whisper's leading space."""
    return list(tokenizer.encode(" " + text.strip(), add_special_tokens=False))


def make_sequence(
    tokenizer, language: str, task: str, text: str, *, max_length: int = 448
) -> tuple[list[int], list[int]]:
    """(decoder_input_ids, labels) for one example; prompt positions of ``labels`` are -100.

    ``max_length`` is the decoder's ``max_target_positions``; longer targets are cut (keeping
    the final <|endoftext|>) with a warning.
    """
    prompt = prompt_ids(tokenizer, language, task)
    body = text_ids(tokenizer, text)
    room = max_length + 1 - len(prompt) - 1  # sequence length is max_length + 1 before shifting
    if len(body) > room:
        log.warning(
            "target of %d tokens cut to %d (max_target_positions=%d): %.60s...", len(body), room, max_length, text
        )
        body = body[:room]
    seq = prompt + body + [special_id(tokenizer, EOT)]
    inputs, labels = seq[:-1], list(seq[1:])
    for i in range(len(prompt) - 1):
        labels[i] = IGNORE_INDEX
    return inputs, labels


@dataclass(frozen=True)
class Item:
    """One training/dev example: which feature row, and the decoder sequence."""

    feature: int
    uid: str
    language: str
    task: str
    decoder_input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def n_targets(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def expand_items(
    examples: Sequence,
    feature_rows: Sequence[int],
    tasks: Sequence[str],
    tokenizer,
    *,
    max_length: int = 448,
    what: str = "split",
) -> list[Item]:
    """One ``Item`` per (utterance, task); translate only for non-English utterances.

    ``examples`` are ``speechmerge.data.io.Example``-like objects (language, transcript,
    translation, id); ``feature_rows[i]`` is the row of example i in the feature bank.
    """
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {list(tasks)}")
    items = []
    for ex, row in zip(examples, feature_rows):
        for task in tasks:
            if task == "translate" and ex.language == "en":
                continue
            text = ex.transcript if task == "transcribe" else ex.translation
            if not text or not text.strip():
                raise ValueError(
                    f"{what}: utterance {ex.id} has an empty {'transcript' if task == 'transcribe' else 'translation'}"
                )
            inp, lab = make_sequence(tokenizer, ex.language, task, text, max_length=max_length)
            items.append(Item(int(row), ex.id, ex.language, task, tuple(inp), tuple(lab)))
    return items


def context_samples(model_config, feature_extractor) -> int:
    """Audio samples that fill the encoder: ``max_source_positions * 2`` frames of ``hop_length``."""
    return int(model_config.max_source_positions) * 2 * int(feature_extractor.hop_length)


def log_mel_bank(
    waves: Sequence[np.ndarray],
    feature_extractor,
    n_samples: int,
    *,
    batch: int = 32,
    progress: bool = False,
    desc: str = "log-mel",
) -> torch.Tensor:
    """Log-mel features of all ``waves`` (padded/trimmed to ``n_samples``) as one float32 tensor.

    Shape ``(N, n_mels, n_samples // hop_length)``; each utterance's features depend on it alone,
    so a split computed chunk by chunk (the trainer's ``FeatureFile``) equals it computed at once.
    """
    from tqdm.auto import tqdm

    n_frames = n_samples // feature_extractor.hop_length
    out = torch.empty((len(waves), feature_extractor.feature_size, n_frames), dtype=torch.float32)
    starts = range(0, len(waves), batch)
    for s in tqdm(starts, desc=desc, disable=not progress, unit="batch"):
        chunk = [np.asarray(w, dtype=np.float32) for w in waves[s : s + batch]]
        feats = feature_extractor(
            chunk,
            sampling_rate=feature_extractor.sampling_rate,
            padding="max_length",
            max_length=n_samples,
            truncation=True,
            return_tensors="np",
        )["input_features"]
        if feats.shape[-1] != n_frames:
            raise RuntimeError(f"feature extractor gave {feats.shape[-1]} frames, expected {n_frames}")
        out[s : s + len(chunk)] = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    return out


class FeatureFile:
    """Log-mel features of a split in a float32 file on disk, one row per utterance, read back
    row by row with ``os.pread`` (no memory map, so a long split does not grow the process:
    memory holds one batch). ``append`` writes rows in order; ``index_select(0, rows)`` gives
    the ``(len(rows), n_mels, n_frames)`` tensor ``collate`` stacks, as a tensor bank would."""

    def __init__(self, path, n_mels: int, n_frames: int):
        import os

        self.path, self.n_mels, self.n_frames = str(path), int(n_mels), int(n_frames)
        self.row_bytes = self.n_mels * self.n_frames * 4
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.n = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n, self.n_mels, self.n_frames)

    def __len__(self) -> int:
        return self.n

    def append(self, feats: np.ndarray) -> None:
        import os

        feats = np.ascontiguousarray(feats, dtype=np.float32)
        if feats.shape[1:] != (self.n_mels, self.n_frames):
            raise ValueError(f"{self.path}: rows of shape {feats.shape[1:]}, expected {(self.n_mels, self.n_frames)}")
        os.pwrite(self._fd, feats.tobytes(), self.n * self.row_bytes)
        self.n += feats.shape[0]

    def index_select(self, dim: int, rows: torch.Tensor) -> torch.Tensor:
        import os

        if dim != 0:
            raise ValueError("FeatureFile selects rows (dim 0) only")
        out = np.empty((len(rows), self.n_mels, self.n_frames), dtype=np.float32)
        for i, r in enumerate(rows.tolist()):
            if not 0 <= r < self.n:
                raise IndexError(f"{self.path}: row {r} of {self.n}")
            buf = os.pread(self._fd, self.row_bytes, r * self.row_bytes)
            out[i] = np.frombuffer(buf, dtype=np.float32).reshape(self.n_mels, self.n_frames)
        return torch.from_numpy(out)

    def close(self) -> None:
        import os

        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def collate(items: Sequence[Item], features, pad_id: int) -> dict[str, torch.Tensor]:
    """Stack features (a tensor bank or a ``FeatureFile``) and right-pad decoder inputs (with
    ``pad_id``) and labels (with -100), in host memory."""
    length = max(len(it.decoder_input_ids) for it in items)
    # built on the host (the job moves the batch to its device)
    inputs = torch.full((len(items), length), pad_id, dtype=torch.long, device="cpu")
    labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long, device="cpu")
    for i, it in enumerate(items):
        n = len(it.decoder_input_ids)
        inputs[i, :n] = torch.tensor(it.decoder_input_ids, dtype=torch.long, device="cpu")
        labels[i, :n] = torch.tensor(it.labels, dtype=torch.long, device="cpu")
    rows = torch.tensor([it.feature for it in items], dtype=torch.long, device="cpu")
    return {"input_features": features.index_select(0, rows), "decoder_input_ids": inputs, "labels": labels}


@functools.lru_cache(maxsize=4)
def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """Deterministic permutation of ``n`` items for one epoch (numpy PCG64 seeded by (seed, epoch))."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def step_indices(n: int, seed: int, step: int, per_step: int) -> list[int]:
    """Item indices for optimizer step ``step`` (0-based) of a stream of per-epoch permutations.

    The stream is ``epoch_order(n, seed, 0) ++ epoch_order(n, seed, 1) ++ ...``; step k takes
    positions ``[k * per_step, (k + 1) * per_step)``. A pure function of the step, so resuming
    needs no data-loader state.
    """
    out = []
    pos = step * per_step
    end = pos + per_step
    while pos < end:
        epoch, off = divmod(pos, n)
        order = epoch_order(n, seed, epoch)
        take = min(end - pos, n - off)
        out.extend(int(i) for i in order[off : off + take])
        pos += take
    return out


def micro_batches(items: Sequence[Item], seed: int, step: int, batch_size: int, grad_accum: int) -> list[list[Item]]:
    """The items of optimizer step ``step`` (``step_indices``), cut into ``grad_accum``
    micro-batches of ``batch_size``."""
    idx = step_indices(len(items), seed, step, batch_size * grad_accum)
    chosen = [items[i] for i in idx]
    return [chosen[m * batch_size : (m + 1) * batch_size] for m in range(grad_accum)]


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """A collated batch on ``device``: on CUDA through pinned host memory, without waiting for
    the copy (the GPU's stream orders it); on the CPU the same tensors."""
    if device is None or torch.device(device).type == "cpu":
        return batch
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


class StepBatches(torch.utils.data.Dataset):
    r"""The micro-batches of training steps ``start``, ``start + 1``, ... (``grad_accum`` per
    step, each ``collate``\ d), for a ``DataLoader`` with workers: batch ``k`` is micro-batch
    ``k % grad_accum`` of step ``start + k // grad_accum``, exactly what the job would collate
    itself (``step_indices``), prepared ahead while the device computes."""

    def __init__(
        self, items, features, pad_id: int, *, seed: int, batch_size: int, grad_accum: int, start: int, steps: int
    ):
        self.items, self.features, self.pad_id = items, features, pad_id
        self.seed, self.batch_size, self.grad_accum = int(seed), int(batch_size), int(grad_accum)
        self.start, self.steps = int(start), int(steps)

    def __len__(self) -> int:
        return max(0, self.steps - self.start) * self.grad_accum

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        step, m = divmod(int(k), self.grad_accum)
        chunks = micro_batches(self.items, self.seed, self.start + step, self.batch_size, self.grad_accum)
        return collate(chunks[m], self.features, self.pad_id)
