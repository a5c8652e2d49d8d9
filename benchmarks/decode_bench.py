"""Decoding throughput (utterances/s) of batched Whisper decoding, and stage shares of a run.

Decoding mode (default; ``--device cuda`` on a GPU, RTFx = audio seconds / decoding seconds):
Whisper base at the model directory's context (the default run imports it
at 5 s), loaded as decoding jobs load it (``speechmerge.models.inference``, freed memory kept), utterances synthesised with eSpeak NG from the checked-in corpus (or read from a parquet
split), every combination of batch size, length sorting, thread count, dtype and tokens-per-second
bound given on the command line. ``--tasks transcribe translate`` decodes every utterance for
both tasks from one encoder pass, as the evaluate rule does; utt/s then counts utterances and
hyp/s hypotheses::

    python benchmarks/decode_bench.py --model resources/models/whisper-base \
        --threads 2 --batch-sizes 8 16 32 --orders sorted unsorted --tasks transcribe translate

Build the model first: ``python -m speechmerge import-model --spec bundle:whisper-base
--out resources/models/whisper-base --max-seconds 5``. The machine load (``uptime``) is printed
before and after: on a shared CPU the figures are only comparable within one run.

Compare mode: ``--compare-generate`` times greedy decoding by ``greedy_generate`` (ended rows
dropped from the batch) against ``model.generate`` on the same encoder states, per batch size and
task, and counts hypotheses that differ (expected: none).

Stage-shares mode: ``python benchmarks/decode_bench.py --stage-shares [benchmarks/out]`` reads
the Snakemake ``benchmark:`` TSVs under the folder (``{rule}/...tsv``) and prints, per rule, the
number of jobs, summed wall seconds, its share of the summed job time, mean seconds, peak RSS.
(Shares of summed job time, not of the critical path: parallel jobs overlap.)
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_average() -> str:
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"
    except OSError:
        return "load average unknown"


def synth_utterances(n: int, languages: list[str], max_seconds: float):
    from speechmerge.data.espeak import synthesize

    rows = list(csv.DictReader(open(ROOT / "resources/text/corpus.tsv", encoding="utf-8"), delimiter="\t"))
    waves, langs, refs = [], [], []
    for i in range(n):
        lang = languages[i % len(languages)]
        row = rows[(i // len(languages)) % len(rows)]
        w = synthesize(row[lang], lang, rate=150 + 10 * (i % 5))
        waves.append(w[: int(16000 * max_seconds)])
        langs.append(lang)
        refs.append(row[lang])
    return waves, langs, refs


def parquet_utterances(path: str, n: int):
    from speechmerge.data.io import read_examples

    ex = read_examples(path)[:n]
    return [e.audio for e in ex], [e.language for e in ex], [e.transcript for e in ex]


def bench_decoding(args) -> None:
    import logging

    import torch

    logging.getLogger("speechmerge").setLevel(logging.ERROR)

    from speechmerge.allocator import keep_freed_memory
    from speechmerge.evaluation.decode import decode_tasks
    from speechmerge.evaluation.metrics import wer
    from speechmerge.models.inference import load_decoder

    keep_freed_memory()  # as decoding jobs run
    model_dir = Path(args.model)
    if not (model_dir / "config.json").exists():
        sys.exit(
            f"{model_dir}: no model; build it with: python -m speechmerge import-model --spec "
            f"bundle:whisper-base --out {model_dir} --max-seconds 5"
        )
    print(f"# start: {load_average()}")
    if args.parquet:
        waves, langs, refs = parquet_utterances(args.parquet, args.n)
        source = args.parquet
    elif args.noise:  # no eSpeak NG needed: the cost of decoding does not depend on the audio
        import numpy as np

        rng = np.random.default_rng(0)
        waves = [(0.1 * rng.standard_normal(int(16000 * args.max_seconds))).astype(np.float32) for _ in range(args.n)]
        langs = [args.languages[i % len(args.languages)] for i in range(args.n)]
        refs = ["-"] * args.n
        source = f"noise, {args.max_seconds:g} s each"
    else:
        waves, langs, refs = synth_utterances(args.n, args.languages, args.max_seconds)
        source = f"eSpeak NG synthesis ({','.join(args.languages)})"
    durs = [len(w) / 16000 for w in waves]
    print(
        f"# {len(waves)} utterances from {source}; mean duration {sum(durs) / len(durs):.2f} s, "
        f"max {max(durs):.2f} s; model {model_dir}"
    )
    from speechmerge.devices import job_device

    device = job_device(args.device)
    audio_s = sum(durs)
    print(f"# device {device}; {audio_s:.1f} s of audio")
    print("threads dtype    batch order    tok/s tasks  utt/s  hyp/s   wall_s  RTFx  dec_steps  at_bound  WER%")
    models, rows = {}, []
    tasks = tuple(args.tasks)
    for threads, dtype, bs, order, rate in itertools.product(
        args.threads, args.dtypes, args.batch_sizes, args.orders, args.rates
    ):
        torch.set_num_threads(threads)
        if dtype not in models:
            models[dtype] = load_decoder(  # what decoding jobs load
                model_dir, dtype=getattr(torch, dtype), device=None if device.type == "cpu" else device
            )
        model, processor = models[dtype]
        decode_tasks(
            model, processor, waves[:2], langs[:2], [tasks] * 2, batch_size=2, max_new_tokens=4, progress=False
        )  # warm-up
        r = decode_tasks(
            model,
            processor,
            waves,
            langs,
            [tasks] * len(waves),
            batch_size=bs,
            beam_size=1,
            max_new_tokens=args.max_new_tokens,
            durations=durs,
            sort_by_length=(order == "sorted"),
            max_tokens_per_second=None if rate == 0 else rate,
            progress=False,
        )
        scored = "transcribe" in r.by_task and not args.noise  # noise has no reference
        w = wer(refs, [h or "" for h in r.by_task["transcribe"]], langs) if scored else float("nan")
        rtfx = audio_s / r.seconds  # seconds of audio decoded per second (all tasks)
        print(
            f"{threads:>7} {dtype:<8} {bs:>5} {order:<8} {rate or '-':>5} {len(tasks):>5} "
            f"{len(waves) / r.seconds:>6.2f} {r.utt_per_s:>6.2f} {r.seconds:>8.1f} {rtfx:>5.0f} "
            f"{r.decoder_steps:>10} {r.n_hit_max_tokens:>9} {w:>6.1f}",
            flush=True,
        )
        rows.append({"threads": threads, "dtype": dtype, "batch": bs, "order": order, "tasks": list(tasks),
                     "utt_per_s": len(waves) / r.seconds, "hyp_per_s": r.utt_per_s, "seconds": r.seconds,
                     "rtfx": rtfx, "wer": w})  # fmt: skip
    print(f"# end: {load_average()}")
    if args.json:
        import json

        Path(args.json).write_text(
            json.dumps(
                {"device": str(device), "model": str(model_dir), "n": len(waves), "audio_s": audio_s, "rows": rows},
                indent=1,
            )  # fmt: skip
        )


def compare_generate(args) -> None:
    """Greedy decoding by ``greedy_generate`` (rows dropped as they end) against
    ``model.generate`` on the same encoder states: seconds of each and differing hypotheses."""
    import logging

    import torch
    from transformers.modeling_outputs import BaseModelOutput

    logging.getLogger("speechmerge").setLevel(logging.ERROR)
    from speechmerge.evaluation.decode import _quiet_transformers, encoder_frames, length_order, log_mel
    from speechmerge.evaluation.greedy import greedy_generate, prompt_ids
    from speechmerge.models import load_whisper

    torch.set_num_threads(args.threads[0])
    model, processor = load_whisper(args.model)
    waves, langs, _ = synth_utterances(args.n, args.languages, args.max_seconds)
    order = length_order([len(w) for w in waves])
    waves, langs = [waves[i] for i in order], [langs[i] for i in order]
    print(
        f"# {len(waves)} utterances, {args.threads[0]} threads, max_new_tokens {args.max_new_tokens}; "
        f"tasks {' '.join(args.tasks)}; {load_average()}"
    )
    print("batch  task        generate_s  greedy_s  speed-up  differing/hypotheses")
    with torch.inference_mode(), _quiet_transformers():
        enc = model.get_encoder()(log_mel(processor, waves, encoder_frames(model))).last_hidden_state
        for bs, task in itertools.product(args.batch_sizes, args.tasks):
            t_gen = t_greedy = 0.0
            differ = 0
            for s in range(0, len(waves), bs):
                states, batch_langs = enc[s : s + bs], langs[s : s + bs]
                t = time.perf_counter()
                ref = model.generate(
                    encoder_outputs=BaseModelOutput(last_hidden_state=states),
                    language=batch_langs,
                    task=task,
                    max_new_tokens=args.max_new_tokens,
                    do_sample=False,
                    return_timestamps=False,
                )
                t_gen += time.perf_counter() - t
                prompts = torch.tensor([prompt_ids(model.generation_config, l, task) for l in batch_langs])
                t = time.perf_counter()
                got = greedy_generate(model, states, prompts, max_new_tokens=args.max_new_tokens)
                t_greedy += time.perf_counter() - t
                a = processor.batch_decode(ref, skip_special_tokens=True)
                b = processor.batch_decode(got, skip_special_tokens=True)
                differ += sum(x != y for x, y in zip(a, b))
            print(
                f"{bs:>5}  {task:<10} {t_gen:>10.2f} {t_greedy:>9.2f} {t_gen / t_greedy:>8.2f}x "
                f"{differ:>10}/{len(waves)}",
                flush=True,
            )


def stage_shares(folder: str) -> None:
    root = Path(folder)
    files = sorted(root.rglob("*.tsv"))
    if not files:
        sys.exit(f"no benchmark TSVs under {root}")
    per_rule: dict[str, list[tuple[float, float]]] = {}
    for f in files:
        rule = f.relative_to(root).parts[0] if len(f.relative_to(root).parts) > 1 else f.stem
        with open(f, encoding="utf-8") as fh:
            for rec in csv.DictReader(fh, delimiter="\t"):
                try:
                    s = float(rec["s"])
                except (KeyError, ValueError):
                    continue
                rss = rec.get("max_rss", "")
                per_rule.setdefault(rule, []).append((s, float(rss) if rss not in ("", "NA", "-") else 0.0))
    total = sum(s for v in per_rule.values() for s, _ in v)
    print(f"# {len(files)} benchmark files under {root}; summed job wall time {total:.1f} s")
    print(f"{'rule':<22} {'jobs':>5} {'sum_s':>10} {'share%':>7} {'mean_s':>9} {'max_rss_MB':>11}")
    for rule, v in sorted(per_rule.items(), key=lambda kv: -sum(s for s, _ in kv[1])):
        ssum = sum(s for s, _ in v)
        print(
            f"{rule:<22} {len(v):>5} {ssum:>10.1f} {100 * ssum / total if total else 0:>7.1f} "
            f"{ssum / len(v):>9.1f} {max(r for _, r in v):>11.0f}"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--stage-shares",
        nargs="?",
        const=str(ROOT / "benchmarks/out"),
        default=None,
        metavar="DIR",
        help="print per-rule shares of the Snakemake benchmark TSVs under DIR",
    )
    ap.add_argument("--model", default=str(ROOT / "resources/models/whisper-base"))
    ap.add_argument("--parquet", default=None, help="a dataset split to decode instead of synthesised speech")
    ap.add_argument("--noise", action="store_true", help="decode noise of --max-seconds instead of synthesised speech")
    ap.add_argument("--n", type=int, default=48, help="number of utterances")
    ap.add_argument("--languages", nargs="+", default=["de", "es", "fr", "it", "nl"])
    ap.add_argument("--max-seconds", type=float, default=5.0, help="synthesised audio is cut to this length")
    ap.add_argument("--threads", nargs="+", type=int, default=[2])
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 16, 32])
    ap.add_argument("--orders", nargs="+", choices=["sorted", "unsorted"], default=["sorted", "unsorted"])
    ap.add_argument("--dtypes", nargs="+", default=["float32"], help="float32 and/or bfloat16")
    ap.add_argument(
        "--rates",
        nargs="+",
        type=float,
        default=[0],
        help="max tokens per second of the longest utterance of a batch (0 = no such bound)",
    )
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto: where decoding runs")
    ap.add_argument("--json", default=None, help="also write every figure to this JSON file")
    ap.add_argument(
        "--tasks",
        nargs="+",
        choices=["transcribe", "translate"],
        default=["transcribe"],
        help="tasks decoded per utterance (both: one encoder pass, as in the evaluate rule)",
    )
    ap.add_argument(
        "--compare-generate",
        action="store_true",
        help="time greedy_generate against model.generate on the same encoder states and count "
        "differing hypotheses (first --threads value)",
    )
    args = ap.parse_args(argv)
    if args.stage_shares:
        stage_shares(args.stage_shares)
    elif args.compare_generate:
        compare_generate(args)
    else:
        bench_decoding(args)


if __name__ == "__main__":
    main()
