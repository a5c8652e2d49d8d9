"""Peak memory of reading training data as speech grows: 1x, 4x and 16x the same amount.

For each multiple k it writes a parquet split of ``k * --unit`` utterances (``--seconds`` of
noise-like speech each, FLAC, as data jobs write them) and measures, each in a fresh process, the
peak RSS of

* **train**: what a fine-tuning job does before its first step (``speechmerge.training.trainer.
  _load_data``: the split read chunk by chunk, log-mel features written to a file on disk, with
  the job's allocator setting while it reads, ``speechmerge.allocator.return_freed_memory``);
* **read**: reading the whole split into memory (``speechmerge.data.io.read_examples``), as
  evaluation jobs still do.

The model's processor (feature extractor, tokenizer) comes from ``--model`` (a model folder;
default: a tiny random Whisper imported into the work folder at ``--seconds`` context). Prints
one row per multiple and the growth from 1x to 16x::

    .venv/bin/python benchmarks/data_bench.py                 # 1x = 200 utterances of 5 s
    .venv/bin/python benchmarks/data_bench.py --unit 500 --model resources/models/whisper-base
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys
mode, split, model = sys.argv[1:4]
if mode == "train":
    from transformers import WhisperProcessor
    from speechmerge.training.trainer import _load_data
    import tempfile
    from speechmerge.allocator import return_freed_memory
    return_freed_memory()  # as a fine-tuning job reads its splits
    proc = WhisperProcessor.from_pretrained(model)
    n_samples = int(json.load(open(model + "/config.json"))["max_source_positions"]) * 2 * proc.feature_extractor.hop_length
    with tempfile.TemporaryDirectory() as d:
        data = _load_data([split], ["transcribe"], proc, n_samples, 448, "train", False, d)
        n = data.n_utts
        data.features.close()
else:
    from speechmerge.data.io import read_examples
    n = len(read_examples(split))
print(json.dumps({"n": n, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_split(path: Path, n: int, seconds: float) -> float:
    import numpy as np

    from speechmerge.data.audio import encode_flac
    from speechmerge.data.io import write_split as write

    rng = np.random.default_rng(0)
    base = [(0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32) for _ in range(16)]
    flac = [encode_flac(w, 16000) for w in base]
    recs = (
        {"id": f"u{i:06d}", "audio": {"bytes": flac[i % 16], "path": None}, "language": "de", "domain": "clean",
         "transcript": "guten morgen", "translation": "good morning", "voice": "", "split": "train", "duration": seconds}
        for i in range(n)
    )  # fmt: skip
    write(recs, path)
    return n * seconds / 3600


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unit", type=int, default=200, help="utterances at 1x")
    ap.add_argument(
        "--seconds", type=float, default=5.0, help="length of each utterance (and the tiny model's context)"
    )
    ap.add_argument("--multiples", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--model", default=None, help="a model folder (its processor); default: a tiny random Whisper")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        model = args.model
        if model is None:
            from speechmerge.models import import_model

            model = str(Path(work) / "tiny")
            import_model("random:tiny", model, max_seconds=args.seconds)
        print(f"# {args.unit} utterances of {args.seconds:g} s at 1x; processor from {model}")
        print("multiple  utterances   hours  train_peak_MB  read_peak_MB")
        rows = []
        for k in args.multiples:
            split = Path(work) / f"x{k}.parquet"
            hours = write_split(split, k * args.unit, args.seconds)
            got = {}
            for mode in ("train", "read"):
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, mode, str(split), model], check=True, capture_output=True, text=True
                ).stdout
                got[mode] = json.loads(out.strip().splitlines()[-1])
            rows.append((k, got))
            print(
                f"{k:8d}  {k * args.unit:10d}  {hours:6.2f}  {got['train']['peak_mb']:13.0f}  {got['read']['peak_mb']:12.0f}"
            )
            split.unlink()
        first, last = rows[0][1], rows[-1][1]
        for mode in ("train", "read"):
            print(
                f"# {mode}: peak RSS x{last[mode]['peak_mb'] / first[mode]['peak_mb']:.2f} from {rows[0][0]}x to {rows[-1][0]}x"
            )


if __name__ == "__main__":
    main()
