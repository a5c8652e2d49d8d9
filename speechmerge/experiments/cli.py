"""``python -m speechmerge list-kinds``: every experiment kind with what it regenerates, its
selection metric and its claims; ``list-peft-methods``: every fine-tuning method with its
defaults."""

from __future__ import annotations

import argparse
import json


def cmd_list_kinds(args: argparse.Namespace) -> int:
    from speechmerge.experiments import all_kinds

    for kind in all_kinds():
        print(kind.name)
        print(f"    {kind.label}")
        print(f"    paper:     {kind.paper or '(none: your own study)'}")
        print(f"    selection: {kind.selection_metric} on dev (config: selection.metric)")
        print(f"    claims:    {', '.join(c.doc_id or c.id for c in kind.claims) or '(none)'}")
    return 0


def cmd_list_peft_methods(args: argparse.Namespace) -> int:
    from speechmerge.training.peft import REGISTRY, peft_method_names

    for name in peft_method_names():
        cls = REGISTRY[name]
        defaults = ", ".join(f"{k}={json.dumps(v)}" for k, v in cls.defaults.items()) or "(none)"
        print(f"{name}\n    label:    {cls.label}\n    defaults: {defaults}")
        print(f"    learns a rank allocation: {'yes' if cls.ranks else 'no'}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list-kinds", help="list the experiment kinds (experiments.<name>.kind)")
    p.set_defaults(func=cmd_list_kinds)
    q = subparsers.add_parser("list-peft-methods", help="list the fine-tuning methods of kind peft with their defaults")
    q.set_defaults(func=cmd_list_peft_methods)
