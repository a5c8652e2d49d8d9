"""Fine-tuning methods: which parameters train and how the update ends up in plain weights.
One module per method, found by the registry of ``base`` (``register``, ``get_peft_method``)."""

import importlib

from speechmerge.training.peft.base import (
    REGISTRY,
    PeftMethod,
    build_method,
    count_parameters,
    get_peft_method,
    method_hparams,
    peft_method_names,
    register,
)

#: The methods' modules, imported (and so registered) in the order of the tables and messages.
METHOD_MODULES = ("full", "bitfit", "lora", "adalora", "s2lora")
for _module in METHOD_MODULES:
    importlib.import_module(f"speechmerge.training.peft.{_module}")

from speechmerge.training.peft.adalora import adalora_schedule  # noqa: E402

__all__ = [
    "REGISTRY",
    "PeftMethod",
    "adalora_schedule",
    "build_method",
    "count_parameters",
    "get_peft_method",
    "method_hparams",
    "peft_method_names",
    "register",
]
