"""Evaluating one model on its test sets: ``evaluate_testsets``, what the ``evaluate`` rule calls.

The model (directory + optional full-weights safetensors) is loaded once; every test set
(parquet) is decoded by one ``decode.decode_tasks`` call, so an utterance scored for both tasks
is encoded once; then each test set is scored (``score_records``) into a record of the scores
format of docs/ARCHITECTURE.md, with bootstrap intervals.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from speechmerge.data.io import skipped_audio
from speechmerge.evaluation import decode as decoding
from speechmerge.evaluation import metrics, stats
from speechmerge.evaluation.decode import hypothesis_records
from speechmerge.names import model_dir_of

log = logging.getLogger(__name__)

__all__ = ["evaluate_testsets", "score_records"]

PRIMARY = {"transcribe": ("wer", "cer"), "translate": ("bleu", "chrf")}
LONG_UTTERANCE_POLICIES = ("truncate", "skip", "error")


def _n_samples(example) -> int:
    """An utterance's length in samples (a spooled one knows it without its audio)."""
    n = getattr(example, "n_samples", None)
    return int(n) if n is not None else len(example.audio)


@dataclass(frozen=True)
class _Spooled:
    """A test-set utterance whose audio waits in the job's ``WaveSpool`` (``row``)."""

    id: str
    language: str
    transcript: str
    translation: str
    duration: float
    row: int
    n_samples: int


def _long_utterances(
    spec: Mapping[str, Any], examples: list, model_context_s: float, policy: str, skip_over_s: float | None
) -> tuple[list, int]:
    """Apply ``evaluation.on_long_utterance`` to one test set: (the examples to decode, how many
    were skipped). ``truncate`` keeps all (the decode counts the truncated ones); ``skip`` drops
    those longer than ``skip_over_s`` (the experiments' context, the same for every model, so all
    models are scored on the same utterances); ``error`` stops naming the file and utterances."""
    from speechmerge.data.audio import SAMPLE_RATE

    if policy not in LONG_UTTERANCE_POLICIES:
        raise ValueError(f"evaluation.on_long_utterance: {policy!r} is not one of {list(LONG_UTTERANCE_POLICIES)}")
    limit = skip_over_s if policy == "skip" and skip_over_s is not None else model_context_s
    too_long = [e for e in examples if _n_samples(e) > round(limit * SAMPLE_RATE)]
    if not too_long or policy == "truncate":
        return examples, 0
    if policy == "error":
        longest = max(_n_samples(e) for e in too_long) / SAMPLE_RATE
        raise ValueError(
            f"{spec['path']}: {len(too_long)} of {len(examples)} utterances are longer than the model's "
            f"{limit:g} s encoder context (longest {longest:.1f} s; ids {[e.id for e in too_long[:5]]}"
            f"{' ...' if len(too_long) > 5 else ''}), and evaluation.on_long_utterance is 'error'. Set it to "
            "'truncate' (decoded from their start, scored against the full reference, counted in every "
            "table's footnote) or 'skip' (left out for every model), or raise audio.max_seconds"
        )
    kept = [e for e in examples if _n_samples(e) <= round(limit * SAMPLE_RATE)]
    if not kept:
        raise ValueError(f"{spec['path']}: every utterance is longer than {limit:g} s; nothing is left to score")
    return kept, len(examples) - len(kept)


def score_records(
    records: list[dict], *, task: str, n_boot: int = 1000, seed: int = 0, spelling_source=None
) -> dict[str, Any]:
    """Metrics of hypothesis records plus 95 % bootstrap intervals (``ci95``)."""
    if not records:
        raise ValueError("no hypothesis records to score")
    ids = [r["id"] for r in records]
    refs = [r["reference"] for r in records]
    hyps = [r["hypothesis"] for r in records]
    langs = [r["language"] for r in records]
    out = metrics.score_texts(refs, hyps, task=task, language=langs, ids=ids, spelling_source=spelling_source)
    ci = {}
    if n_boot:
        for m in PRIMARY[task]:
            cs = stats.corpus_stats(records, m, spelling_source=spelling_source)
            ci[m] = list(stats.bootstrap_ci(cs, n_boot=n_boot, seed=seed))
    out["ci95"] = ci
    out["bootstrap"] = {"n_boot": n_boot, "seed": seed, "unit": "utterance", "interval": "percentile"}
    return out


def _read_testset(spec: Mapping[str, Any], read: dict[str, list], spool) -> tuple[list, list[str]]:
    """The utterances of one test set spec (``_Spooled``: their audio goes to ``spool`` as the
    file is read a row group at a time) and the prompt language of each (checked against
    ``spec["language"]`` when given). ``read`` caches the utterances per path, so a file named by
    several test sets is read once."""
    from speechmerge.data.io import iter_examples

    for key in ("path", "testset", "task"):
        if key not in spec:
            raise KeyError(f"test set spec {dict(spec)} lacks {key!r}")
    if spec["task"] not in PRIMARY:
        raise ValueError(f"{spec['path']}: unknown task {spec['task']!r} (expected one of {sorted(PRIMARY)})")
    path = str(spec["path"])
    if path not in read:
        read[path] = [
            _Spooled(e.id, e.language, e.transcript, e.translation, e.duration, spool.append(e.audio), len(e.audio))
            for chunk in iter_examples(path)
            for e in chunk
        ]
    examples = read[path]
    if not examples:
        raise ValueError(f"{spec['path']}: test set is empty")
    field = "transcript" if spec["task"] == "transcribe" else "translation"
    empty = [e.id for e in examples if not str(getattr(e, field) or "").strip()]
    if empty:  # checked before any decoding, not after minutes of it
        raise ValueError(
            f"{spec['path']}: empty {field} (the {spec['task']} reference) for utterance(s) "
            f"{empty[:5]}{' ...' if len(empty) > 5 else ''}"
        )
    language = spec.get("language")
    if language is not None:
        want = metrics.base_language(language)
        other = sorted({e.language for e in examples if metrics.base_language(e.language) != want})
        if other:
            raise ValueError(
                f"{spec['path']}: evaluation language is {language!r} but the test set holds utterances in {other}"
            )
    return examples, [metrics.base_language(e.language) for e in examples]


def _evaluate_loaded(
    model,
    processor,
    model_dir: Path,
    testsets: Sequence[Mapping[str, Any]],
    *,
    batch_size: int,
    beam_size: int,
    max_new_tokens: int,
    model_name: str,
    experiment: str | None,
    n_boot: int,
    seed: int,
    progress: bool,
    max_tokens_per_second: float | None = None,
    on_long_utterance: str = "truncate",
    skip_over_s: float | None = None,
) -> tuple[list[dict], list[dict[str, Any]]]:
    """Decode every test set with one ``decode_tasks`` call and score each test set on its own.

    A parquet file named by several test sets (e.g. ``de`` for ``de-transcribe`` and
    ``de-translate``) is read and encoded once. Utterances longer than the encoder context are
    handled by ``on_long_utterance`` (``_long_utterances``).
    """
    import torch

    from speechmerge.data.spool import WaveSpool

    context_s = model.config.max_source_positions * 2 / 100.0
    with WaveSpool.temporary() as spool:  # the audio waits on disk; memory holds one batch
        waves, prompts, durations, tasks, loaded = _gather(testsets, spool, context_s, on_long_utterance, skip_over_s)
        names = sorted({s.get("testset") or Path(s["path"]).stem for s in testsets})
        res = decoding.decode_tasks(
            model,
            processor,
            spool.take(waves),
            prompts,
            tasks,
            batch_size=batch_size,
            beam_size=beam_size,
            max_new_tokens=max_new_tokens,
            durations=durations,
            max_tokens_per_second=max_tokens_per_second,
            testset=f"{model_name} on {len(names)} test set(s)",
            progress=progress,
        )
    log.info(
        "%s: %d hypotheses of %d utterances in %.1f s (%.2f hyp/s, %d decoder steps)",
        model_name,
        res.n_hypotheses,
        len(waves),
        res.seconds,
        res.utt_per_s,
        res.decoder_steps,
    )
    all_records, results = [], []
    for spec, examples, rows, n_skipped in loaded:
        task = spec["task"]
        testset = spec.get("testset") or Path(spec["path"]).stem
        records = hypothesis_records(examples, [res.by_task[task][i] or "" for i in rows], task=task, model=model_name)
        for r in records:
            r["testset"] = testset
        scored = score_records(records, task=task, n_boot=n_boot, seed=seed, spelling_source=model_dir)
        langs = sorted({r["language"] for r in records})
        language = spec.get("language")
        scores = {
            "model": model_name,
            "experiment": experiment,
            "testset": testset,
            "subset": spec.get("subset"),
            "task": task,
            "language": language if language is not None else (langs[0] if len(langs) == 1 else langs),
            "n": len(records),
            "metrics": scored["metrics"],
            "ci95": scored["ci95"],
            "bootstrap": scored["bootstrap"],
            "bleu_signature": scored["info"].get("bleu_signature"),
            "chrf_signature": scored["info"].get("chrf_signature"),
            "normalizer": scored["info"].get("normalizer"),
            "primary_metric": scored["info"]["primary_metric"],
            "decoding": {
                "batch_size": res.batch_size,
                "beam_size": res.beam_size,
                "max_new_tokens": res.max_new_tokens,
                "max_tokens_per_second": res.max_tokens_per_second,
                "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
                **({"device": str(dev)} if (dev := next(model.parameters()).device).type != "cpu" else {}),
                "n_truncated": sum(res.truncated[i] for i in rows),
                **({"n_skipped": n_skipped, "skip_over_s": skip_over_s} if n_skipped else {}),
                "n_hit_max_new_tokens": sum(res.hit_bound[task][i] for i in rows),
                # clips the data job left out (data.on_bad_audio: skip)
                **({"n_bad_audio_skipped": bad} if (bad := sum(skipped_audio([spec["path"]]).values())) else {}),
                "context_seconds": context_s,
                "threads": torch.get_num_threads(),
                # figures of the one decode call shared by all test sets of this model
                "shared": {
                    "testsets": len(testsets),
                    "utterances": len(waves),
                    "hypotheses": res.n_hypotheses,
                    "seconds": round(res.seconds, 3),
                    "hyp_per_s": round(res.utt_per_s, 3),
                    "decoder_steps": res.decoder_steps,
                },
            },
        }
        log.info("%s on %s: %s", model_name, testset, scores["metrics"])
        all_records += records
        results.append(scores)
    return all_records, results


def _gather(testsets, spool, context_s: float, on_long_utterance: str, skip_over_s: float | None):
    """Read every test set into ``spool`` (a file named by several is read once) and list what
    one ``decode_tasks`` call decodes: (spool rows, prompt languages, durations, tasks per
    utterance, and per test set ``(spec, utterances, their indices, n skipped)``)."""
    waves, prompts, durations, tasks = [], [], [], []  # waves: rows of the spool
    where: dict[tuple[str, int], int] = {}  # (path, row) -> utterance index
    loaded, read = [], {}
    for spec in testsets:
        examples, langs = _read_testset(spec, read, spool)
        kept, n_skipped = _long_utterances(spec, examples, context_s, on_long_utterance, skip_over_s)
        if n_skipped:
            ids = {e.id for e in kept}
            langs = [lang for e, lang in zip(examples, langs) if e.id in ids]
            examples = kept
        rows = []
        for k, (e, lang) in enumerate(zip(examples, langs)):
            key = (str(spec["path"]), k)
            if key not in where:
                where[key] = len(waves)
                waves.append(e.row)
                prompts.append(lang)
                durations.append(e.duration)
                tasks.append(set())
            tasks[where[key]].add(spec["task"])
            rows.append(where[key])
        loaded.append((spec, examples, rows, n_skipped))
    return waves, prompts, durations, tasks, loaded


def torch_dtype(name: str | None, device=None):
    """The weights' dtype for decoding: ``float32``, ``bfloat16``, ``float16`` (CUDA only) or
    ``auto`` (bfloat16 where the CPU has bf16 dot products, or on a GPU that computes bf16;
    ``speechmerge.numerics.resolve_precision``)."""
    import torch

    from speechmerge.numerics import resolve_precision

    return getattr(torch, resolve_precision(name, where="evaluation.dtype", device=device))


def load_decoding_model(model_dir, weights, decoding: Mapping[str, Any] | None):
    """``(model, processor)`` as the ``evaluation`` settings say: on their device (a GPU slot
    claimed for this job with ``cuda``), in their dtype, for their beam size."""
    from speechmerge.devices import job_device
    from speechmerge.models.inference import load_decoder

    dec = decoding or {}
    device = job_device(dec.get("device"), jobs_per_gpu=int(dec.get("jobs_per_gpu", 1)))
    dtype = torch_dtype(dec.get("dtype"), device)
    return load_decoder(
        model_dir,
        weights,
        dtype=dtype,
        beam_size=int(dec.get("beam_size", 1)),
        device=None if device.type == "cpu" else device,
    )


def _provenance(config_hash, model_dir, weights, **extra):
    from speechmerge.utils import provenance

    return provenance(
        None,
        config_hash=config_hash,
        model_dir=str(model_dir),
        weights=None if weights is None else str(weights),
        **extra,
    )


def evaluate_testsets(
    model_dir: str | os.PathLike,
    weights: str | os.PathLike | None,
    testsets: Sequence[Mapping[str, Any]],
    *,
    model_name: str,
    experiment: str | None = None,
    batch_size: int = 16,
    beam_size: int = 1,
    max_new_tokens: int = 128,
    config_hash: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
    max_tokens_per_second: float | None = None,
    dtype: str = "float32",
    on_long_utterance: str = "truncate",
    skip_over_s: float | None = None,
    device: str | None = None,
    jobs_per_gpu: int = 1,
) -> tuple[list[dict], dict[str, Any]]:
    """Load the model once (on ``device``: cpu, cuda, cuda:N, auto) and evaluate it on several test sets.

    ``testsets``: dicts with ``path`` (parquet), ``testset`` (name), ``task`` and optionally
    ``subset`` and ``language``. Returns all hypothesis records (each with a ``testset`` field)
    and ``{"model", "experiment", "results": [one scores record per test set], "provenance"}``.
    """
    model_dir = model_dir_of(model_dir)
    model, processor = load_decoding_model(
        model_dir, weights, {"dtype": dtype, "beam_size": beam_size, "device": device, "jobs_per_gpu": jobs_per_gpu}
    )
    all_records, results = _evaluate_loaded(
        model,
        processor,
        model_dir,
        testsets,
        batch_size=batch_size,
        beam_size=beam_size,
        max_new_tokens=max_new_tokens,
        model_name=model_name,
        experiment=experiment,
        n_boot=n_boot,
        seed=seed,
        progress=progress,
        max_tokens_per_second=max_tokens_per_second,
        on_long_utterance=on_long_utterance,
        skip_over_s=skip_over_s,
    )
    return all_records, {
        "model": model_name,
        "experiment": experiment,
        "results": results,
        "provenance": _provenance(config_hash, model_dir, weights, testset_paths=[str(t["path"]) for t in testsets]),
    }
