"""Opt-out tags a user writes in a message, honoured end to end.

- ``#no-train``: remember for recall, never train on it.
- ``#no-rag``:   may train on it, never recall it into a prompt.
- ``#private``:  keep nothing beyond the raw event log.

Tags are matched case-insensitively as whole words anywhere in the user's
message. They are removed from the text that is stored, so they are never
taught or recalled as content.
"""

from __future__ import annotations

import re

OPT_OUT_TAGS = ("no-train", "no-rag", "private")
_TAG_RE = re.compile(r"(?<![\w#-])#(no-train|no-rag|private)(?![\w-])", re.IGNORECASE)


def find_tags(*texts: str) -> list[str]:
    """The opt-out tags present in any of ``texts``, sorted, without the '#'."""
    found = {m.group(1).lower() for text in texts for m in _TAG_RE.finditer(text)}
    return sorted(found)


_TAG_WITH_SPACE_RE = re.compile(r"[ \t]?" + _TAG_RE.pattern, re.IGNORECASE)


def strip_tags(text: str) -> str:
    """``text`` without opt-out tags (and the space before each); nothing else changes."""
    if not _TAG_RE.search(text):
        return text  # keep code indentation and layout exactly
    return _TAG_WITH_SPACE_RE.sub("", text).strip()
