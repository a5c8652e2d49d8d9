"""Package data: the parallel text corpus (installed as ``speechmerge.corpus``; read with importlib.resources)."""
