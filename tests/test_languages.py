"""The plan's list of Whisper language codes is transformers' own."""

from speechmerge.languages import WHISPER_LANGUAGES, whisper_language


def test_whisper_languages_equal_the_tokenizers():
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    assert WHISPER_LANGUAGES == tuple(LANGUAGES)


def test_unknown_code_is_named():
    import pytest

    assert whisper_language("sv") == "sv"
    with pytest.raises(ValueError, match="'xx' is not one of Whisper's language codes"):
        whisper_language("xx")
