"""Peak memory of the data path as speech grows: 1x, 4x and 16x the same amount of speech.

For each multiple k it builds a Common Voice release of ``k * --unit`` MP3 clips (48 kHz, as
recent releases ship them; ``--seconds`` each) and measures, each stage in a fresh process, the
peak RSS of what the pipeline's jobs do with it:

* **prepare**: the ``synthesize_corpus`` job reading the release (``readers.common_voice.
  iter_records``: clips decoded, resampled and re-encoded one at a time) into a parquet split
  (``io.write_split``: a row group at a time);
* **train**: a fine-tuning job before its first step (``training.trainer._load_data``: the
  split read a row group at a time, log-mel features written to a file on disk, with the job's
  allocator setting while it reads, ``allocator.return_freed_memory``);
* **evaluate**: an evaluation job (``evaluation.evaluate_model.evaluate_testsets``: the split
  read into a spool on disk, decoded in batches of 16 read back from it; 2 new tokens each, so
  the figure is the data path's and the model's, not the decoder's).

The model (its processor, and the one evaluated) comes from ``--model`` (a model folder;
default: a tiny random Whisper imported into the work folder at ``--context`` seconds). Prints
one row per multiple and the growth from the first to the last multiple::

    .venv/bin/python benchmarks/data_bench.py                 # 1x = 200 utterances of 5 s
    .venv/bin/python benchmarks/data_bench.py --unit 100 --model resources/models/whisper-base
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys
mode, src, split, model = sys.argv[1:5]
from speechmerge.allocator import return_freed_memory
if mode == "prepare":
    from speechmerge.data.io import write_split
    from speechmerge.data.readers import common_voice
    return_freed_memory()  # as the synthesize_corpus job does
    n = write_split(common_voice.iter_records(src, language="de", split="train", progress=False), split)
elif mode == "train":
    from transformers import WhisperProcessor
    from speechmerge.training.trainer import _load_data
    import tempfile
    return_freed_memory()  # as a fine-tuning job reads its splits
    proc = WhisperProcessor.from_pretrained(model)
    n_samples = int(json.load(open(model + "/config.json"))["max_source_positions"]) * 2 * proc.feature_extractor.hop_length
    with tempfile.TemporaryDirectory() as d:
        data = _load_data([split], ["transcribe"], proc, n_samples, 448, "train", False, d)
        n = data.n_utts
        data.features.close()
else:
    from speechmerge.allocator import keep_freed_memory
    from speechmerge.evaluation.evaluate_model import evaluate_testsets
    keep_freed_memory()  # as an evaluation job does
    spec = {"path": split, "testset": "de-transcribe", "task": "transcribe", "language": "de"}
    recs, _ = evaluate_testsets(model, None, [spec], model_name="m", batch_size=16, max_new_tokens=2, n_boot=0,
                                progress=False, on_long_utterance="truncate")
    n = len(recs)
print(json.dumps({"n": n, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

STAGES = ("prepare", "train", "evaluate")


def make_release(root: Path, n: int, seconds: float) -> float:
    """A Common Voice release of ``n`` clips (16 distinct MP3 recordings, hard-linked)."""
    import numpy as np
    import soundfile as sf

    loc = root / "de"
    (loc / "clips").mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = []
    for k in range(16):
        t = np.arange(int(48000 * seconds)) / 48000
        wave = 0.2 * np.sin(2 * np.pi * (180 + 20 * k) * t) + 0.02 * rng.standard_normal(t.size)
        path = root / f"base{k}.mp3"
        sf.write(path, wave.astype(np.float32), 48000, format="MP3")
        base.append(path)
    lines = ["client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment"]
    for i in range(n):
        name = f"common_voice_de_{i:07d}.mp3"
        os.link(base[i % 16], loc / "clips" / name)
        lines.append(f"spk{i % 50}\t{name}\tguten morgen nummer {i}\t2\t0\t\t\t\tde\t")
    (loc / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return n * seconds / 3600


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unit", type=int, default=200, help="utterances at 1x")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each utterance")
    ap.add_argument("--context", type=float, default=5.0, help="encoder context of the default tiny model (s)")
    ap.add_argument("--multiples", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--model", default=None, help="a model folder; default: a tiny random Whisper")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        model = args.model
        if model is None:
            from speechmerge.models import import_model

            model = str(Path(work) / "tiny")
            import_model("random:tiny", model, max_seconds=args.context)
        print(f"# {args.unit} utterances of {args.seconds:g} s at 1x (MP3, 48 kHz); model {model}")
        print("multiple  utterances   hours  " + "  ".join(f"{s}_peak_MB" for s in args.stages))
        rows = []
        for k in args.multiples:
            release = Path(work) / f"cv{k}"
            split = Path(work) / f"x{k}.parquet"
            hours = make_release(release, k * args.unit, args.seconds)
            got = {}
            for stage in STAGES:
                if stage not in args.stages and not (stage == "prepare" and not split.exists()):
                    continue
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, stage, str(release), str(split), model],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                got[stage] = json.loads(out.strip().splitlines()[-1])
            rows.append({"multiple": k, "utterances": k * args.unit, "hours": hours, **got})
            print(
                f"{k:8d}  {k * args.unit:10d}  {hours:6.2f}  "
                + "  ".join(f"{got[s]['peak_mb']:{len(s) + 8}.0f}" for s in args.stages)
            )
            shutil.rmtree(release)
            split.unlink()
        first, last = rows[0], rows[-1]
        for s in args.stages:
            print(
                f"# {s}: peak RSS x{last[s]['peak_mb'] / first[s]['peak_mb']:.2f} "
                f"from {first['multiple']}x to {last['multiple']}x"
            )
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
