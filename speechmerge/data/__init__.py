"""Speech data: the parallel text corpus, eSpeak NG synthesis, acoustic domains, real-data adapters."""

from speechmerge.data.audio import SAMPLE_RATE, decode_audio, encode_flac, resample
from speechmerge.data.io import COLUMNS, load_split, read_examples, write_split

__all__ = [
    "SAMPLE_RATE",
    "decode_audio",
    "encode_flac",
    "resample",
    "COLUMNS",
    "load_split",
    "read_examples",
    "write_split",
]
