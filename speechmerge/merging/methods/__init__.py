"""Every merging method, one module each; importing this package imports every module in it,
which registers its method (``speechmerge.merging.base.register``). A module that fails to import
fails the import of the package: no method goes missing silently."""

from __future__ import annotations

import importlib
import pkgutil

MODULES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))

for _name in MODULES:
    importlib.import_module(f"{__name__}.{_name}")
