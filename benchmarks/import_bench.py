"""Benchmark of the model import stage: bundle:whisper-base, cold, in a fresh process.

Prints: wall time of the import (and its phases from import_info.json), size of the converted
directory, peak resident memory of the importing process, and the zero-shot transcript of an
eSpeak NG English sentence (full 30 s context and cropped to --max-seconds).

    .venv/bin/python benchmarks/import_bench.py [--threads 1] [--max-seconds 6] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SENTENCE = "Hello, how are you doing today? The weather is very nice."

_CHILD = """
import sys, torch
torch.set_num_threads(int(sys.argv[3]))
from speechmerge.models import import_model
import_model(sys.argv[1], sys.argv[2], progress=False)
"""


def cold_import(spec: str, out: Path, threads: int) -> dict:
    """Run the import in a fresh interpreter; wall time and the child's peak RSS."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", _CHILD, spec, str(out), str(threads)], check=True)
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: kilobytes
    return {"wall_s": wall, "peak_rss_mb": peak_kb / 1024}


def transcribe(model_dir: Path, max_seconds: int | None, threads: int) -> dict:
    import torch
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    from speechmerge.data.espeak import synthesize
    from speechmerge.models import load_whisper
    from speechmerge.models.crop import crop_model

    torch.set_num_threads(threads)
    audio = synthesize(SENTENCE, "en")
    model, processor = load_whisper(model_dir)
    if max_seconds:
        crop_model(model, processor, max_seconds)
    feats = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    t0 = time.perf_counter()
    with torch.no_grad():
        ids = model.generate(feats, language="en", task="transcribe", max_new_tokens=60)
    dt = time.perf_counter() - t0
    hyp = processor.batch_decode(ids, skip_special_tokens=True)[0]
    norm = EnglishTextNormalizer({})
    return {
        "context_s": max_seconds or 30,
        "audio_s": len(audio) / 16000,
        "decode_s": dt,
        "hypothesis": hyp,
        "exact_after_normaliser": norm(hyp) == norm(SENTENCE),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-seconds", type=int, default=6)
    ap.add_argument("--keep", type=Path, default=None, help="write the model here instead of a temp dir")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="import-bench-") as tmp:
        out = args.keep or Path(tmp) / "whisper-base"
        run = cold_import("bundle:whisper-base", out, args.threads)
        info = json.loads((out / "import_info.json").read_text())
        print(f"import bundle:whisper-base (cold process, {args.threads} thread(s))")
        print(f"  wall time          {run['wall_s']:.2f} s (incl. interpreter + imports)")
        print("  phases             " + ", ".join(f"{k} {v:.2f} s" for k, v in info["timing_s"].items()))
        print(f"  peak RSS           {run['peak_rss_mb']:.0f} MB")
        print(f"  parameters         {info['n_params']:,} ({info['n_tensors']} tensors, proj_out tied)")
        print(
            f"  size on disk       {info['size_bytes'] / 1e6:.1f} MB "
            f"(model.safetensors {info['files']['model.safetensors'] / 1e6:.1f} MB, float32)"
        )
        for ms in (None, args.max_seconds):
            r = transcribe(out, ms, args.threads)
            print(
                f"  zero-shot, {r['context_s']:>2d} s context: {r['hypothesis']!r} "
                f"(exact: {r['exact_after_normaliser']}; {r['audio_s']:.2f} s audio decoded in {r['decode_s']:.2f} s)"
            )


if __name__ == "__main__":
    main()
