"""Command line: ``python -m speechmerge <command> ...``.

Each command lives next to the code it drives and exposes ``add_parser(subparsers)`` which
registers a sub-parser whose ``func`` attribute runs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "speechmerge.models.cli",  # import-model
    "speechmerge.merging.cli",  # merge, list-methods
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m speechmerge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
