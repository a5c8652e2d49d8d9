"""Synthesis throughput (utterances/s with domains applied) and FLAC size per hour of audio.

    .venv/bin/python benchmarks/synth_bench.py [--corpus resources/text/corpus.tsv] [-n 60]
        [--workers 1 2] [--domains clean telephone noisy babble reverb child farfield]

Sentences come from the corpus file (every row is used as if it were train, so the benchmark
works on a corpus whose splits are not assigned yet). Prints one line per (domain, workers):
utterances/s, audio seconds per wall second, and the FLAC MB per hour of audio; then per
language (clean, 1 worker) the mean utterance duration.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

from speechmerge.data.domains import DEFAULT_DOMAINS
from speechmerge.data.synthesize import synthesize_split

ROOT = Path(__file__).resolve().parents[1]


def all_train_copy(corpus: Path, out_dir: Path) -> Path:
    with open(corpus, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, body = rows[0], rows[1:]
    split = header.index("split")
    out = out_dir / "corpus_all_train.tsv"
    with open(out, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n")
        w.writerow(header)
        for r in body:
            w.writerow(r[:split] + ["train"] + r[split + 1 :])
    return out


def run(corpus: Path, language: str, domain: str, n: int, workers: int) -> dict:
    t0 = time.perf_counter()
    recs = synthesize_split(
        corpus,
        language=language,
        domain_transforms=DEFAULT_DOMAINS[domain],
        split="train",
        sentences=n,
        renderings=1,
        seed=0,
        domain_name=domain,
        subset=domain,
        workers=workers,
        progress=False,
    )
    wall = time.perf_counter() - t0
    audio_s = sum(r["duration"] for r in recs)
    flac_bytes = sum(len(r["audio"]["bytes"]) for r in recs)
    return {
        "utt_per_s": len(recs) / wall,
        "rtf_inv": audio_s / wall,
        "mb_per_hour": flac_bytes / 1e6 / (audio_s / 3600),
        "mean_dur": audio_s / len(recs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=ROOT / "resources" / "text" / "corpus.tsv")
    ap.add_argument("-n", type=int, default=60, help="utterances per measurement")
    ap.add_argument("--language", default="de")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--domains", nargs="+", default=["clean", "telephone", "noisy", "babble", "reverb", "child", "farfield"]
    )
    ap.add_argument(
        "--languages", nargs="*", default=["en", "ca", "de", "es", "fr", "it", "id", "nl", "pt", "ru", "sv", "zh"]
    )
    args = ap.parse_args()
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}, corpus: {args.corpus}")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = all_train_copy(args.corpus, Path(tmp))
        run(corpus, args.language, "clean", 2, 1)  # warm-up (imports, filter design caches)
        print(f"{'domain':10s} {'workers':>7s} {'utt/s':>7s} {'audio s/s':>9s} {'FLAC MB/h':>9s}")
        for domain in args.domains:
            for w in args.workers:
                r = run(corpus, args.language, domain, args.n, w)
                print(f"{domain:10s} {w:7d} {r['utt_per_s']:7.1f} {r['rtf_inv']:9.1f} {r['mb_per_hour']:9.1f}")
        if args.languages:
            print(
                f"\n{'language':8s} {'utt/s':>7s} {'mean dur s':>10s} {'FLAC MB/h':>9s}   (clean, 1 worker, n={args.n // 3})"
            )
            for lang in args.languages:
                r = run(corpus, lang, "clean", max(2, args.n // 3), 1)
                print(f"{lang:8s} {r['utt_per_s']:7.1f} {r['mean_dur']:10.2f} {r['mb_per_hour']:9.1f}")


if __name__ == "__main__":
    main()
