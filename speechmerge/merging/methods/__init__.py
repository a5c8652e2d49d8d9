"""Every merging method, one module each; importing this package registers them all."""

from __future__ import annotations

import importlib

# Parameter space, task-vector space (engine owner).
CORE_METHODS = (
    "soup",
    "model_stock",
    "karcher",
    "multislerp",
    "task_arithmetic",
    "ties",
    "dare_linear",
    "dare_ties",
    "pcb",
    "sce",
)
# Subspace and low-rank/sparse methods (written in parallel; a module still missing is skipped).
SUBSPACE_METHODS = (
    "iso_c",
    "iso_cts",
    "tsv_m",
    "tsv_m_ns",
    "boosted_tsv_m",
    "lors",
    "lors_lowrank",
    "lors_sparse",
)

for _name in CORE_METHODS:
    importlib.import_module(f"{__name__}.{_name}")

for _name in SUBSPACE_METHODS:
    _module = f"{__name__}.{_name}"
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as err:  # only the module itself being absent is tolerated
        if err.name != _module:
            raise
