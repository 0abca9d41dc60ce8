"""Character classes and the same-length lower-casing every detector shares."""

from __future__ import annotations

import functools
import re
import string

# Python's `re` has no \p{Lu}: build Latin upper/lower classes once (ASCII,
# Latin-1 and Latin Extended-A/B cover the European names and streets we target).
_UP = "".join(c for c in map(chr, range(0x41, 0x250)) if c.isalpha() and c.isupper())
_LO = "".join(c for c in map(chr, range(0x61, 0x250)) if c.isalpha() and c.islower()) + "ß"
_UP = re.escape(_UP)
_LO = re.escape(_LO)

_ANY_DIGIT = re.compile(r"[0-9]")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@functools.lru_cache(maxsize=8)
def _lower(text: str) -> str:
    """ASCII-lowercased copy with the *same length* (str.lower() can change lengths: 'İ').

    Case-insensitive alternations are slow in `re` (no first-character
    skipping); matching cue words case-sensitively on this copy is several
    times faster, and offsets stay valid for the original text.
    """
    return text.translate(_ASCII_LOWER)

