"""Keyed name tokens: recall a memory by a person's name without storing the name.

Since issue 12 names are kept by default (``ingest.redact_names = false``): the
memory then holds the name itself, and the same keys are still written for the
names it mentions, so a question by name ranks it first in both modes. What
follows is the ``redact_names`` mode, for which the keys were made.

Redaction turns "My sister Mara's birthday is March 14th" into "My sister
[NAME]'s birthday is March 14th" before it reaches the index, as privacy
asks. But then a later "when is Mara's birthday?" has nothing to match: on
bench/bench_retrieval.py, questions about a person by name reached recall@5
0.56 through the pipeline against 1.00 on raw text.

So for every name the redactor takes, ingest keeps a *keyed hash* of each of
its words (HMAC-SHA256 with a random per-installation key, 64 bits kept)
beside the memory, never the name. At recall, the names the redactor finds
in the query are hashed the same way; memories carrying one of those hashes
are candidates even if the vector search missed them, and rank above
memories that do not. The index then says "some memory mentions the same
name as this query", and nothing more without the key.

The key lives in ``data/keys/names.key`` (0600, directory 0700), outside the
memory index: the index is derived state (rebuilt from the log with the same
key, so a rebuild gives the same answers), and a copy of ``data/memory/``
alone cannot be checked against a list of names. Whoever holds the key *and*
the index can test guesses (first names are a small set): the hashes are
pseudonyms, not anonymity. Deleting the key and running ``circ memory
rebuild`` re-keys every memory.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

from services.lib.privacy.redact import PLACEHOLDERS, Span, redact

NAME_PLACEHOLDER = PLACEHOLDERS["name"]
KEY_FILE = "names.key"
KEY_BYTES = 32
HASH_HEX = 16  # 64 bits: a collision between two names is ~1 in 10^19 per pair
_WORD = re.compile(r"[^\W\d_][\w'’.-]*")
_POSSESSIVE = re.compile(r"['’]s?$")
_CAPITALISED = re.compile(r"(?<![\w'’])[A-Z][\w'’-]*")
_TITLES = frozenset("mr mrs ms miss mx dr prof sir dame herr frau mme mlle sig signor signora".split())


def name_words(name: str) -> list[str]:
    """The words of one redacted name, normalised: "Mrs. D’Angelo's" -> ["d’angelo"]."""
    words = []
    for match in _WORD.finditer(name):
        word = _POSSESSIVE.sub("", match.group().rstrip(".").casefold()).replace("’", "'")
        if len(word) >= 2 and word not in _TITLES:
            words.append(word)
    return words


class NameKeys:
    """Hashes of name words under one installation's secret key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a name key needs at least 16 bytes")
        self._key = key

    @classmethod
    def open(cls, directory: Path) -> NameKeys:
        """The key in ``directory/names.key``, created (0600) on first use."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / KEY_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_bytes()
            if len(key) != KEY_BYTES:
                raise ValueError(f"{path} holds {len(key)} bytes, not {KEY_BYTES}: delete it and run "
                                 f"`circ memory rebuild` to key every memory again") from None
            return cls(key)
        key = secrets.token_bytes(KEY_BYTES)
        try:  # two processes racing here: the loser reads the winner's complete key next time
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return cls(key)

    def word_key(self, word: str) -> str:
        return hmac.new(self._key, b"name\0" + word.encode(), hashlib.sha256).hexdigest()[:HASH_HEX]

    def from_spans(self, text: str, spans: Iterable[Span]) -> list[str]:
        """Sorted, distinct keys of the words of every name span in the original ``text``."""
        words = {w for span in spans if span.kind == "name" for w in name_words(text[span.start:span.end])}
        return sorted(self.word_key(w) for w in words)

    def query_words(self, text: str) -> dict[str, str]:
        """{key: the word as written in ``text``} for every word of ``text`` that may be a name:
        what the redactor calls a name, and any capitalised word.

        A query needs recall, not precision: a word hashed in vain matches no memory, while a
        name the redactor misses here (no cue: "What does Gwen do?") but took from the memory
        ("My accountant Gwen ...") would be lost.
        """
        found = [text[span.start:span.end] for span in redact(text, names=True).spans if span.kind == "name"]
        found += [m.group() for m in _CAPITALISED.finditer(text)]
        out: dict[str, str] = {}
        for name in found:
            for match in _WORD.finditer(name):
                for word in name_words(match.group()):
                    out.setdefault(self.word_key(word), _POSSESSIVE.sub("", match.group().rstrip(".")))
        return out

    def in_query(self, text: str) -> list[str]:
        """Sorted keys of :meth:`query_words`."""
        return sorted(self.query_words(text))


def restore_name(text: str, words: list[str]) -> str:
    """``text`` with its one ``[NAME]`` written as ``words`` (the query's own spelling of the
    name this memory was found by); unchanged when it holds no or several placeholders, since
    then which one is meant is unknown. Shows the user nothing they did not just type.
    """
    if not words or text.count(NAME_PLACEHOLDER) != 1:
        return text
    return text.replace(NAME_PLACEHOLDER, " ".join(words))
