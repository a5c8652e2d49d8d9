"""speechmerge: merging and adapting Whisper models for multilingual ASR and speech translation."""

__version__ = "0.1.0"
