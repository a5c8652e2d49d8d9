"""Readers of speech corpora in their released on-disk layouts, chosen by ``data.source`` with a
``data.root`` (``speechmerge.data.readers.base``: the registry; one module per corpus)."""

from speechmerge.data.readers.base import LocalReader, get_reader, reader_names, register

# importing a corpus module registers its reader
from speechmerge.data.readers import common_voice, covost2, fleurs, hf_disk  # noqa: E402,F401  isort: skip

__all__ = ["LocalReader", "get_reader", "reader_names", "register"]
