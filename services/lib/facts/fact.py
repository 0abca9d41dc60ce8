"""The fact record and what every part of the package agrees on about relations.

A :class:`Fact` is one (subject, relation, value) a user stated; ``key`` is
what a later statement of the same relation updates, except for the
:data:`MULTI_VALUED` relations, whose values add up.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

# The abstention an answer to a never-stated fact should give (false recall).
ABSTAIN = "I don't know."


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    value: str
    statement: str  # the (redacted) sentence it came from
    memory_id: str = ""
    seq: int = 0

    @property
    def key(self) -> tuple[str, str]:
        """What a later statement updates: (subject, relation)."""
        return (self.subject.lower(), self.relation)

    def to_dict(self) -> dict:
        return asdict(self)


MULTI_VALUED = frozenset({"allergy", "hobby"})
_PLACEHOLDER = re.compile(r"\[[A-Z_]+\]")


def family(relation: str) -> str:
    """The template family of a relation (``favourite_food`` -> ``favourite``)."""
    return "favourite" if relation.startswith("favourite_") else relation


def has_placeholder(text: str) -> bool:
    """Whether ``text`` holds a redaction placeholder (``[NAME]``, ``[EMAIL]``, ...): such a value is no fact."""
    return bool(_PLACEHOLDER.search(text))
