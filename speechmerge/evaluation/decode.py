"""Batched Whisper decoding of a test set, and the hypotheses JSONL format.

``decode_tasks`` runs the encoder once per batch of utterances, then decodes every (utterance,
task) row of the batch from those encoder states under ``torch.inference_mode``: greedy decoding
in one loop with a prompt per row that drops rows as they end (``speechmerge.evaluation.greedy``;
token for token what ``generate`` gives), beam search (``beam_size > 1``) with one
``model.generate(encoder_outputs=..., language=[...], task=...)`` call per task. ``decode`` is
its one-task form. The evaluate rule decodes all test sets of a model in one call, so an
utterance scored for both transcription and translation is encoded once, and the test sets of a
model share batches:

* utterances are sorted by duration (longest first) before batching. The encoder input is fixed
  length anyway (``config.max_source_positions * 2`` mel frames, the possibly cropped context),
  but the output length grows with the duration, so sorting keeps the rows of one batch ending
  at similar steps;
* log-mel features are computed per batch with one batched call of the processor's feature
  extractor (torch STFT), padded / truncated to the model's context (utterances longer than the
  context are truncated and counted);
* the language and task prompt is per row. A language the model has no prompt token for raises
  before any decoding;
* ``max_new_tokens`` bounds every hypothesis; optionally ``max_tokens_per_second`` lowers the
  bound of a batch to ceil(rate x longest duration in the batch) + ``token_margin`` (a rate well
  above speech, e.g. 12 tokens/s where natural speech is 3-8, only cuts hallucination loops
  short).

Speed notes (Whisper base, 5 s context, 2 CPU cores): the encoder costs ~11 GFLOP per utterance
whatever the speech length (fixed input), ~0.1 s; a decoder step is dominated by the
51,865-way output projection and streams all decoder weights, so it costs ~65 ms at 16 rows and
~190 ms at 64. Larger batches spread the weight traffic; dropping ended rows keeps one runaway
hypothesis from holding a whole batch in the decoder (greedy decoding 1.7-1.9x faster than
``generate`` at batch 64, the same tokens). ``torch.bfloat16`` weights roughly halve both on
CPUs with AVX512-BF16 (not the default: results then differ slightly).

Hypotheses JSONL: one line per utterance ``{"id", "language", "task", "reference",
"hypothesis", "model"}``; the reference is the transcript (transcribe) or the English
translation (translate).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from speechmerge.utils import atomic_path

if TYPE_CHECKING:  # torch is imported where it is used, so reading hypotheses needs no torch
    import torch

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
TASKS = ("transcribe", "translate")
HYP_FIELDS = ("id", "language", "task", "reference", "hypothesis", "model")


@dataclass
class DecodeResult:
    by_task: dict[str, list[str | None]]  # task -> hypotheses in input order (None: not asked for)
    seconds: float  # wall time of feature extraction + encoder + generation
    truncated: list[bool]  # per utterance: longer than the encoder context (each is encoded once)
    hit_bound: dict[str, list[bool]]  # task -> per utterance: stopped at its token bound (likely runaway)
    batch_size: int
    beam_size: int
    max_new_tokens: int
    max_tokens_per_second: float | None = None
    decoder_steps: int = 0  # decoder steps run, summed over batches (a greedy step serves both tasks)

    @property
    def encoder_passes(self) -> int:
        """Utterances run through the encoder (once each, whatever the tasks)."""
        return len(self.truncated)

    @property
    def n_truncated(self) -> int:
        return sum(self.truncated)

    @property
    def n_hit_max_tokens(self) -> int:
        return sum(sum(h) for h in self.hit_bound.values())

    @property
    def hypotheses(self) -> list[str]:
        """The hypotheses of a one-task decode, in input order."""
        if len(self.by_task) != 1:
            raise ValueError(f"decoded {sorted(self.by_task)}: use by_task[task]")
        return [h or "" for h in next(iter(self.by_task.values()))]

    @property
    def n_hypotheses(self) -> int:
        return sum(h is not None for hyps in self.by_task.values() for h in hyps)

    @property
    def utt_per_s(self) -> float:
        """Hypotheses per second (an utterance decoded for two tasks counts twice)."""
        return self.n_hypotheses / self.seconds if self.seconds > 0 else float("nan")


def encoder_frames(model) -> int:
    """Number of mel frames the encoder takes: 2 x max_source_positions (conv stride 2)."""
    return int(model.config.max_source_positions) * 2


def language_token(language: str) -> str:
    return f"<|{language}|>"


def check_prompts(model, languages: Sequence[str], task: str, *, testset: str = "test set") -> None:
    """Raise ``ValueError`` if the generation config cannot prompt a language or the task."""
    gc = model.generation_config
    if task not in TASKS:
        raise ValueError(f"{testset}: unknown task {task!r} (expected one of {TASKS})")
    lang_to_id = getattr(gc, "lang_to_id", None) or {}
    task_to_id = getattr(gc, "task_to_id", None) or {}
    if not lang_to_id or not task_to_id:
        raise ValueError(
            f"{testset}: the model's generation_config lacks lang_to_id / task_to_id, "
            "so Whisper cannot be prompted with a language and task"
        )
    if task not in task_to_id:
        raise ValueError(f"{testset}: the model has no prompt token for task {task!r}")
    missing = sorted({l for l in languages if language_token(l) not in lang_to_id})
    if missing:
        raise ValueError(
            f"{testset}: no language prompt token for language(s) {missing} in the model's "
            f"generation_config.lang_to_id (e.g. {sorted(lang_to_id)[:5]}...)"
        )


def log_mel(processor, waves: Sequence[np.ndarray], n_frames: int, device=None):
    """Batched log-mel features [B, n_mels, n_frames] (Whisper's extractor, torch STFT).

    Waves are zero-padded / truncated to ``n_frames * hop_length`` samples first, which equals
    cropping the 30 s features (the log-mel clamp uses the per-clip maximum, and zero padding
    never raises it).
    """
    import torch

    fe = processor.feature_extractor
    n_samples = n_frames * fe.hop_length
    if hasattr(processor, "log_mel"):  # speechmerge.models.inference.Frontend: the same values
        return processor.log_mel(waves, n_samples, device=device)
    out = fe(
        [np.asarray(w, dtype=np.float32) for w in waves],
        sampling_rate=SAMPLE_RATE,
        padding="max_length",
        max_length=n_samples,
        truncation=True,
        return_tensors="pt",
    )
    feats = out["input_features"]
    if feats.shape[-1] != n_frames:
        raise RuntimeError(f"feature extractor returned {feats.shape[-1]} frames, expected {n_frames}")
    return feats.to(device=device, dtype=torch.float32)


def length_order(durations: Sequence[float], sort: bool = True) -> list[int]:
    """Indices ordered longest first (stable); identity if ``sort`` is false."""
    idx = list(range(len(durations)))
    return sorted(idx, key=lambda i: -float(durations[i])) if sort else idx


def decode(
    model,
    processor,
    waves: Sequence[np.ndarray],
    languages: Sequence[str],
    *,
    task: str,
    **kwargs,
) -> DecodeResult:
    """Decode 16 kHz waveforms for one task with per-utterance language prompts.

    ``res.hypotheses`` are in input order; keyword arguments as for ``decode_tasks``.
    """
    return decode_tasks(model, processor, waves, languages, [(task,)] * len(waves), **kwargs)


def decode_tasks(
    model,
    processor,
    waves: Sequence[np.ndarray],
    languages: Sequence[str],
    tasks: Sequence[Sequence[str]],
    *,
    batch_size: int = 16,
    beam_size: int = 1,
    max_new_tokens: int = 128,
    durations: Sequence[float] | None = None,
    sort_by_length: bool = True,
    max_tokens_per_second: float | None = None,
    token_margin: int = 8,
    testset: str = "test set",
    progress: bool = True,
) -> DecodeResult:
    """Decode every utterance ``i`` for each task in ``tasks[i]`` with one encoder pass.

    Batches of ``batch_size`` utterances (longest first) go through the encoder once. Greedy
    decoding (``beam_size`` 1) then runs one ``greedy.greedy_generate`` loop over every
    (utterance, task) row of the batch; beam search runs one ``generate(encoder_outputs=...)``
    call per task (the same tokens as passing the features).
    """
    import torch
    from tqdm.auto import tqdm

    n = len(waves)
    if len(languages) != n or len(tasks) != n:
        raise ValueError(f"{testset}: {n} waveforms but {len(languages)} languages and {len(tasks)} task lists")
    if batch_size < 1 or beam_size < 1 or max_new_tokens < 1:
        raise ValueError(f"{testset}: batch_size, beam_size and max_new_tokens must be >= 1")
    wanted = [t for t in TASKS if any(t in ts for ts in tasks)]
    unknown = sorted({t for ts in tasks for t in ts} - set(TASKS))
    if unknown:
        raise ValueError(f"{testset}: unknown task(s) {unknown} (expected one of {TASKS})")
    for t in wanted:
        check_prompts(model, [l for l, ts in zip(languages, tasks) if t in ts], t, testset=testset)
    n_frames = encoder_frames(model)
    n_samples = n_frames * processor.feature_extractor.hop_length
    # prompt = <|startoftranscript|> <|xx|> <|task|> <|notimestamps|>
    limit = int(model.config.max_target_positions) - 4
    if max_new_tokens > limit:
        log.warning(
            "%s: max_new_tokens %d > %d allowed by the decoder; using %d", testset, max_new_tokens, limit, limit
        )
        max_new_tokens = limit
    # a spooled sequence (speechmerge.data.spool) knows its lengths without reading the audio
    lengths = getattr(waves, "lengths", None) or [len(w) for w in waves]
    if durations is None:
        durations = [n / SAMPLE_RATE for n in lengths]
    order = length_order(durations, sort_by_length)
    truncated = [n > n_samples for n in lengths]
    if any(truncated):
        log.warning(
            "%s: %d of %d utterances are longer than the %.1f s encoder context and are truncated",
            testset,
            sum(truncated),
            n,
            n_samples / SAMPLE_RATE,
        )
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    model.eval()
    by_task: dict[str, list[str | None]] = {t: [None] * n for t in wanted}
    hit: dict[str, list[bool]] = {t: [False] * n for t in wanted}
    steps = 0
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
    t0 = time.perf_counter()
    with (
        torch.inference_mode(),
        _quiet_transformers(),
        tqdm(total=n, desc=f"decode {testset}", unit="utt", disable=not progress) as bar,
    ):
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            bound = max_new_tokens
            if max_tokens_per_second:
                longest = max(float(durations[i]) for i in idx)
                bound = min(bound, max(1, math.ceil(max_tokens_per_second * longest) + int(token_margin)))
            feats = log_mel(processor, [waves[i] for i in idx], n_frames, device=device).to(device, dtype)
            states = model.get_encoder()(feats).last_hidden_state
            outputs, n_steps = _generate(
                model,
                states,
                [languages[i] for i in idx],
                [tasks[i] for i in idx],
                wanted,
                bound=bound,
                beam_size=beam_size,
            )
            steps += n_steps
            for task, rows, seqs in outputs:
                texts = processor.batch_decode(seqs, skip_special_tokens=True)
                # generated tokens only; a row that ran to the bound has no end-of-text
                at_bound = seqs.shape[-1] >= bound
                lasts = seqs[:, -1].tolist() if seqs.shape[-1] else [next(iter(eos))] * len(rows)
                for j, text, last in zip(rows, texts, lasts):
                    by_task[task][idx[j]] = text.strip()
                    hit[task][idx[j]] = bool(at_bound and int(last) not in eos)
            bar.update(len(idx))
    res = DecodeResult(
        by_task,
        time.perf_counter() - t0,
        truncated,
        hit,
        batch_size,
        beam_size,
        max_new_tokens,
        max_tokens_per_second,
        steps,
    )
    if res.n_hit_max_tokens:
        log.warning(
            "%s: %d hypotheses reached their token bound (max_new_tokens=%d%s) without end-of-text",
            testset,
            res.n_hit_max_tokens,
            max_new_tokens,
            f", {max_tokens_per_second:g} tokens/s" if max_tokens_per_second else "",
        )
    return res


def _generate(
    model,
    states,
    languages: Sequence[str],
    tasks: Sequence[Sequence[str]],
    wanted: Sequence[str],
    *,
    bound: int,
    beam_size: int,
) -> tuple[list[tuple[str, list[int], "torch.Tensor"]], int]:
    """``([(task, rows of the batch, generated ids), ...], decoder steps)`` for one encoded batch.

    Greedy: one ``greedy_generate`` loop over every (utterance, task) row of the batch, ended rows
    dropped as it goes. Beam search: one ``generate(encoder_outputs=...)`` call per task.
    """
    import torch

    if beam_size == 1:
        from speechmerge.evaluation.greedy import greedy_generate, prompt_ids

        pairs = [(j, t) for t in wanted for j, ts in enumerate(tasks) if t in ts]
        prompts = torch.tensor(
            [prompt_ids(model.generation_config, languages[j], t) for j, t in pairs], device=states.device
        )
        rows = [j for j, _ in pairs]
        if rows == list(range(states.shape[0])):
            ids = greedy_generate(model, states, prompts, max_new_tokens=bound)
        else:  # several tasks per utterance: their rows share its cross-attention keys and values
            state_rows = torch.tensor(rows, dtype=torch.long, device=states.device)
            ids = greedy_generate(model, states, prompts, max_new_tokens=bound, state_rows=state_rows)
        out = []
        for t in wanted:
            sel = [k for k, (_, tt) in enumerate(pairs) if tt == t]
            if sel:
                out.append((t, [pairs[k][0] for k in sel], ids[sel]))
        return out, int(ids.shape[-1])
    from transformers.modeling_outputs import BaseModelOutput

    out, steps = [], 0
    for t in wanted:
        rows = [j for j, ts in enumerate(tasks) if t in ts]
        if not rows:
            continue
        sub = states if len(rows) == states.shape[0] else states[rows]
        res = model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=sub),
            language=[languages[j] for j in rows],
            task=t,
            max_new_tokens=bound,
            num_beams=beam_size,
            do_sample=False,
            return_timestamps=False,
        )
        seqs = res.sequences if hasattr(res, "sequences") else res
        out.append((t, rows, seqs))
        steps += int(seqs.shape[-1])
    return out, steps


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' per-call generation warnings (deprecations about arguments that
    Whisper's own ``generate`` passes internally) for the duration of decoding. Nothing to do
    when transformers is not loaded (decoding with ``speechmerge.models.inference``)."""
    import sys

    if "transformers" not in sys.modules:
        yield
        return
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


# --------------------------------------------------------------------------- JSONL


def hypothesis_records(examples: Sequence, hypotheses: Sequence[str], *, task: str, model: str) -> list[dict]:
    """JSONL records for ``examples`` (``speechmerge.data.io.Example`` or dicts)."""

    def get(ex, key):
        return ex[key] if isinstance(ex, Mapping) else getattr(ex, key)

    recs = []
    for ex, hyp in zip(examples, hypotheses, strict=True):
        ref = get(ex, "transcript") if task == "transcribe" else get(ex, "translation")
        recs.append(
            {
                "id": get(ex, "id"),
                "language": get(ex, "language"),
                "task": task,
                "reference": ref,
                "hypothesis": hyp,
                "model": model,
            }
        )
    return recs


def write_hypotheses(records: Sequence[Mapping], path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            rec = {k: r[k] for k in HYP_FIELDS}
            if "testset" in r:
                rec["testset"] = r["testset"]
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def read_hypotheses(
    path: str | os.PathLike, *, expect_model: str | None = None, expect_task: str | None = None
) -> list[dict]:
    """Read a hypotheses JSONL; raise ``ValueError`` naming the file and line on a malformed
    record, a mixture of models, or a model / task other than expected. Records of one
    evaluation job may span several test sets (field ``testset``) and both tasks."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"hypotheses file not found: {path}")
    recs = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {err.start}); rebuild it (snakemake --forcerun {path})"
        ) from None
    for k, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 may sit inside a record
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{k}: not JSON ({exc}); rebuild it (snakemake --forcerun {path})") from exc
        missing = [x for x in HYP_FIELDS if x not in r]
        if missing:
            raise ValueError(f"{path}:{k}: record lacks {missing}")
        recs.append(r)
    if not recs:
        raise ValueError(f"{path}: no hypotheses")
    models = sorted({r["model"] for r in recs})
    if len(models) > 1:
        raise ValueError(f"{path}: hypotheses of several models {models}")
    if expect_model is not None and models[0] != expect_model:
        raise ValueError(f"{path}: hypotheses are from model {models[0]!r}, expected {expect_model!r}")
    if expect_task is not None:
        other = sorted({r["task"] for r in recs} - {expect_task})
        if other:
            raise ValueError(f"{path}: hypotheses of task(s) {other}, expected only {expect_task!r}")
    return recs


def split_by_testset(records: Sequence[Mapping], *, default: str | None = None) -> dict[str, list[dict]]:
    """Group records by their ``testset`` field (``default`` for records without one)."""
    out: dict[str, list[dict]] = {}
    for r in records:
        name = r.get("testset", default)
        if name is None:
            raise ValueError(f"hypothesis record {r.get('id')!r} has no testset field")
        out.setdefault(name, []).append(dict(r))
    return out
