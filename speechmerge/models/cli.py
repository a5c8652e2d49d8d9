"""``python -m speechmerge import-model --spec SPEC --out DIR [--max-seconds S] [--seed N]``."""

from __future__ import annotations

import argparse
import json
import logging


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "import-model",
        help="turn a model spec into a Hugging Face Whisper directory",
        description="Import bundle:whisper-base, random:<size> or hf:<id or path> as a Hugging Face Whisper directory.",
    )
    p.add_argument("--spec", required=True, help="bundle:whisper-base | random:tiny | random:micro | hf:<id or path>")
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    p.add_argument("--max-seconds", type=int, default=None, help="crop the encoder context to this many seconds")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (random: specs)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from speechmerge.models import import_model

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    info = import_model(args.spec, args.out, max_seconds=args.max_seconds, seed=args.seed)
    summary = {k: info[k] for k in ("spec", "n_params", "size_bytes", "chunk_seconds")}
    summary["seconds"] = round(info["timing_s"]["total"], 2)
    print(json.dumps(summary))
    return 0
