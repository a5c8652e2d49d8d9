"""Start-up of a decoding job, and a check that decoding without transformers changes no hypothesis.

Start-up (each in a fresh interpreter, ``--repeats`` times, median printed): the time from
process start until a Whisper model is loaded and ready to decode, the way an evaluation job
loads it, for

* ``inference``: ``speechmerge.models.inference.load_decoder`` (plain PyTorch; what the
  evaluate, dev-selection and experts-dev jobs use);
* ``transformers``: ``speechmerge.models.load_whisper`` (``WhisperForConditionalGeneration``;
  what training uses, and decoding used before);

and the bare ``python -c "import torch"`` for reference.

Check (``--run DIR``, a finished run's working directory): every evaluation in
``DIR/results/eval/<experiment>/<model>.json`` whose model and weights still exist is decoded
again (the test sets and decoding settings its scores record lists) and each hypothesis is
compared with the stored one in ``<model>.jsonl``; prints the number that differ (0 expected).

    .venv/bin/python benchmarks/startup_bench.py [--model-dir resources/models/whisper-base] [--repeats 5]
    .venv/bin/python benchmarks/startup_bench.py --run . [--experiments domains] [--limit 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = {
    "python + torch": "import torch",
    "inference": (
        "import sys, torch\n"
        "from speechmerge.models.inference import load_decoder\n"
        "load_decoder(sys.argv[1])\n"
        "from speechmerge.evaluation import metrics\n"
        "metrics.normalizer_for('en')\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    ),
    "transformers": (
        "import sys, torch\nfrom speechmerge.models import load_whisper\nload_whisper(sys.argv[1])\n"
        "from speechmerge.evaluation import metrics\nmetrics.normalizer_for('en')\n"
    ),
}


def startup(model_dir: Path, repeats: int) -> None:
    print(f"start-up until the model is loaded ({model_dir}), median of {repeats} fresh processes:")
    for name, code in CHILD.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code, str(model_dir)], check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        print(f"  {name:15s} {statistics.median(times):5.2f} s  (min {min(times):.2f}, max {max(times):.2f})")


def check(run: Path, experiments: list[str] | None, limit: int | None, threads: int) -> int:
    import torch

    from speechmerge.evaluation import evaluate_testsets

    torch.set_num_threads(threads)
    differ = total = models = 0
    for scores_path in sorted((run / "results" / "eval").glob("*/*.json")):
        if experiments and scores_path.parent.name not in experiments:
            continue
        doc = json.loads(scores_path.read_text())
        prov = doc["provenance"]
        weights = prov.get("weights")
        if not (run / prov["model_dir"]).is_dir() or (weights and not (run / weights).is_file()):
            continue  # a merged model is temporary: gone once evaluated
        dec = doc["results"][0]["decoding"]
        if int(dec.get("beam_size", 1)) != 1:
            continue
        testsets = [
            {"path": str(run / p), "testset": r["testset"], "task": r["task"], "language": r.get("language"),
             "subset": r.get("subset")}
            for p, r in zip(prov["testset_paths"], doc["results"])
        ]  # fmt: skip
        t0 = time.perf_counter()
        records, _ = evaluate_testsets(
            run / prov["model_dir"], run / weights if weights else None, testsets, model_name=doc["model"],
            batch_size=int(dec["batch_size"]), max_new_tokens=int(dec["max_new_tokens"]),
            max_tokens_per_second=dec.get("max_tokens_per_second"), n_boot=0, progress=False,
        )  # fmt: skip
        stored = {}
        with open(scores_path.with_suffix(".jsonl"), encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                stored[(r.get("testset"), r["id"], r["task"])] = r["hypothesis"]
        bad = [r for r in records if stored.get((r.get("testset"), r["id"], r["task"])) != r["hypothesis"]]
        differ, total, models = differ + len(bad), total + len(records), models + 1
        print(f"{scores_path.parent.name}/{doc['model']}: {len(records)} hypotheses, {len(bad)} differ "
              f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip
        for r in bad[:3]:
            print(
                f"    {r['id']} {r['task']}: {stored.get((r.get('testset'), r['id'], r['task']))!r} -> {r['hypothesis']!r}"
            )
        if limit and models >= limit:
            break
    print(f"{models} models, {total} hypotheses, {differ} differ from the stored ones")
    return 1 if differ else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=Path("resources/models/whisper-base"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--run", type=Path, help="a finished run's directory: re-decode its evaluations and compare")
    ap.add_argument("--experiments", nargs="*")
    ap.add_argument("--limit", type=int, help="at most this many models")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.run:
        return check(args.run, args.experiments, args.limit, args.threads)
    startup(args.model_dir, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
