"""Keyed name hashes (services/lib/privacy/names.py): normalisation, the key file, query words."""

from __future__ import annotations

import stat

import pytest

from services.lib.privacy.names import KEY_BYTES, NameKeys, name_words, restore_name
from services.lib.privacy.redact import redact


@pytest.mark.parametrize(("name", "words"), [
    ("Mara", ["mara"]),
    ("Mrs. D’Angelo", ["d'angelo"]),
    ("Dr. Sean O'Brien", ["sean", "o'brien"]),
    ("Anna-Lena", ["anna-lena"]),
    ("Jodi Curtis's", ["jodi", "curtis"]),
    ("J.", []),
])
def test_name_words_are_normalised(name: str, words: list[str]) -> None:
    assert name_words(name) == words


def test_the_key_file_is_created_private_once_and_reused(tmp_path) -> None:
    first = NameKeys.open(tmp_path / "keys")
    path = tmp_path / "keys" / "names.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(path.read_bytes()) == KEY_BYTES
    again = NameKeys.open(tmp_path / "keys")
    assert again.word_key("mara") == first.word_key("mara")
    # Another installation's key gives other hashes: the index alone says nothing.
    assert NameKeys.open(tmp_path / "other").word_key("mara") != first.word_key("mara")


def test_a_damaged_key_file_says_what_to_do(tmp_path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "names.key").write_bytes(b"short")
    with pytest.raises(ValueError, match="circ memory rebuild"):
        NameKeys.open(tmp_path / "keys")


def test_memory_and_query_meet_on_the_same_word(tmp_path) -> None:
    keys = NameKeys.open(tmp_path)
    text = "My accountant Gwen Okafor files my taxes every April."
    stored = keys.from_spans(text, redact(text, names=True).spans)  # the ingest.redact_names mode
    assert len(stored) == 2  # gwen, okafor
    # The query has no cue for the redactor; every capitalised word is hashed, so it still meets.
    assert set(keys.in_query("What does Gwen handle for me?")) & set(stored)
    assert not set(keys.in_query("what does my accountant do?")) & set(stored)


def test_query_words_keep_the_querys_spelling(tmp_path) -> None:
    keys = NameKeys.open(tmp_path)
    words = keys.query_words("When is Dr. O'Brien's appointment with Anna?")
    assert words[keys.word_key("o'brien")] == "O'Brien" and words[keys.word_key("anna")] == "Anna"
    assert restore_name("My dentist [NAME] moved.", ["O'Brien"]) == "My dentist O'Brien moved."
    assert restore_name("[NAME] met [NAME].", ["Anna"]) == "[NAME] met [NAME]."
    assert restore_name("No placeholder.", ["Anna"]) == "No placeholder."
