"""Command line: ``python -m speechmerge <command> ...``.

Each command lives next to the code it drives and exposes ``add_parser(subparsers)`` which
registers a sub-parser whose ``func`` attribute runs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> the module that registers it (imported only for that command: importing
# ``speechmerge.models`` loads transformers' Whisper, seconds that a merge does not need).
COMMANDS = {
    "import-model": "speechmerge.models.cli",
    "merge": "speechmerge.merging.cli",
    "list-methods": "speechmerge.merging.cli",
    "list-kinds": "speechmerge.experiments.cli",
    "list-peft-methods": "speechmerge.experiments.cli",
    "compare-reports": "speechmerge.report.compare",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or only ``command``'s module's commands when it is known."""
    parser = argparse.ArgumentParser(prog="python -m speechmerge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
