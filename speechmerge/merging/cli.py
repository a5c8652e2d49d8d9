"""``python -m speechmerge merge`` and ``python -m speechmerge list-methods``.

    python -m speechmerge merge --method ties --base DIR --experts DIR [DIR ...] --out DIR \\
        [--set key=value ...] [--seed N] [--delta-only] [--threads N] [--device cpu|cuda|auto] [--overwrite]

Base and experts are Whisper checkpoints in Hugging Face format (directories with
``model.safetensors`` or a sharded index); the experts are full fine-tuned models, their task
vectors are computed tensor by tensor. The output directory is a loadable model: the base's
configuration, generation config and tokenizer files, the merged ``model.safetensors`` and
``merge_info.json`` (with ``--delta-only``: ``delta.safetensors``, the merged task vector).
The output is written into a temporary directory beside ``--out`` and moved in when complete.
An existing ``--out`` must be empty; one that holds a previous merge (its ``merge_info.json``
lists every file in it) is replaced only with ``--overwrite``; anything else is refused.
``--set`` values are parsed as JSON when they parse (numbers, true/false, null, lists), else
kept as strings: ``--set keep_fraction=0.1 --set weights=[0.7,0.3]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from speechmerge.merging.base import REGISTRY, get_method


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: json(v) or v}``; ValueError on an item without ``=``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _describe(err: Exception, out: str) -> str:
    """An error as one line that names the path at fault (an OSError's own, else ``--out``)."""
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
        where = err.filename or out
        reason = err.strerror or str(err)
        return f"cannot write --out {out}: {reason} ({where})" if str(out) not in reason else reason
    return str(err)


def cmd_merge(args: argparse.Namespace) -> int:
    from speechmerge.merging.engine import merge_models
    from speechmerge.utils import set_threads

    set_threads(args.threads)
    try:
        method = get_method(args.method, parse_sets(args.set))
    except (KeyError, ValueError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    try:
        from speechmerge.devices import job_device
        from speechmerge.merging.engine import on_device

        with on_device(job_device(args.device)):
            info = merge_models(args.base, args.experts, method, args.out, seed=args.seed,
                                delta_only=args.delta_only, progress=not args.quiet,
                                overwrite=args.overwrite)  # fmt: skip
    except (ValueError, OSError, RuntimeError) as err:  # OSError: --out not writable, a full disk, a concurrent writer
        print(f"error: {_describe(err, args.out)}", file=sys.stderr)
        return 1
    print(f"{info['method']} of {len(info['experts'])} experts -> {info['out_path']} ({info['wall_s']:.1f} s)")
    return 0


def cmd_list_methods(args: argparse.Namespace) -> int:
    from speechmerge.merging import methods  # noqa: F401  (registers every method)

    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        print(f"{name}")
        print(f"    label:    {cls.label}")
        if doc:
            print(f"    {doc[0]}")
        defaults = ", ".join(f"{k}={json.dumps(v)}" for k, v in cls.defaults.items()) or "(none)"
        print(f"    defaults: {defaults}")
        if cls.grid:
            grid = ", ".join(f"{k}={json.dumps(v)}" for k, v in cls.grid.items())
            print(f"    dev grid: {grid}" + (f" ({cls.scale_param}: one merge)" if cls.scale_param in cls.grid else ""))
        print(f"    source:   {cls.source}")
        print(f"    see:      {cls.reference_url}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "merge",
        help="merge fine-tuned Whisper checkpoints into one model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--method", required=True, help="merge method (see list-methods)")
    p.add_argument("--base", required=True, help="base model directory (HF format)")
    p.add_argument("--experts", required=True, nargs="+", help="fine-tuned model directories")
    p.add_argument(
        "--out", required=True, help="output model directory: new or empty (a previous merge output with --overwrite)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace --out if it holds a previous merge output (and nothing else)"
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="hyperparameter (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of randomised methods (DARE)")
    p.add_argument("--delta-only", action="store_true", help="write the merged task vector, not the model")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu (default), cuda, cuda:N or auto: where the SVD / Newton-Schulz methods factorise each tensor",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_merge)

    q = subparsers.add_parser("list-methods", help="list merge methods with their defaults and sources")
    q.set_defaults(func=cmd_list_methods)
