"""Experiment kinds: one module per kind (``multilingual``, ``domains``, ``peft``,
``merge-study``), each owning its
plan builder, report layout, selection metric and claims, found by the registry of ``base``."""

import importlib

from speechmerge.experiments.base import KINDS, ExperimentKind, ReportSpec, all_kinds, get_kind, register

#: The kinds' modules, imported (and so registered) in the order of docs and listings.
KIND_MODULES = ("multilingual", "domains", "peft", "merge_study")
for _module in KIND_MODULES:
    importlib.import_module(f"speechmerge.experiments.{_module}")

__all__ = ["KINDS", "ExperimentKind", "ReportSpec", "all_kinds", "get_kind", "register"]
