"""What a training step optimises and how it is measured: the learning-rate schedule, the
loss over target tokens, and the dev loss and token accuracy."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from speechmerge.training import batching
from speechmerge.training.vocab_head import vocab_logits


def lr_factor(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


# ----------------------------------------------------------------------------------------
# loss


def target_loss(
    whisper, batch: dict[str, torch.Tensor], accuracy: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """(sum of token CE, number of correct argmax tokens, number of target tokens) of a batch;
    the count is ``None`` when ``accuracy`` is false (a training step does not use it)."""
    labels = batch["labels"]
    out = whisper.model(
        input_features=batch["input_features"], decoder_input_ids=batch["decoder_input_ids"], use_cache=False
    )
    mask = labels != batching.IGNORE_INDEX
    hidden = out.last_hidden_state[mask]
    logits = vocab_logits(hidden, whisper.proj_out).float()
    targets = labels[mask]
    loss_sum = F.cross_entropy(logits, targets, reduction="sum")
    correct = (logits.detach().argmax(-1) == targets).sum() if accuracy else None
    return loss_sum, correct, int(targets.numel())


@torch.inference_mode()
def evaluate_items(
    whisper,
    items: Sequence[batching.Item],
    features: torch.Tensor,
    pad_id: int,
    batch_size: int,
    autocast: bool = False,
    device=None,
    amp_dtype=torch.bfloat16,
) -> tuple[float, float]:
    """Token-mean CE and token accuracy of ``whisper`` on ``items``, on ``device`` (None: the
    CPU), under ``amp_dtype`` autocast when ``autocast``."""
    device_type = torch.device(device).type if device is not None else "cpu"
    was_training = whisper.training
    whisper.eval()
    total = correct = 0.0
    n = 0
    try:
        for s in range(0, len(items), batch_size):
            batch = batching.to_device(batching.collate(items[s : s + batch_size], features, pad_id), device)
            with torch.autocast(device_type, dtype=amp_dtype, enabled=autocast):
                loss_sum, corr, k = target_loss(whisper, batch)
            total += float(loss_sum)
            correct += float(corr)
            n += k
    finally:
        whisper.train(was_training)
    return total / max(n, 1), correct / max(n, 1)


# ----------------------------------------------------------------------------------------
# checkpoints: safetensors + json only
