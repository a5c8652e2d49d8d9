"""Package data: the config schema (installed as ``speechmerge.schemas``; read with importlib.resources)."""
