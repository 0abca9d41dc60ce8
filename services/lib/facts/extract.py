"""``extract_facts``: the facts a (redacted) user message states, sentence by sentence."""

from __future__ import annotations

import re

from services.lib.facts.fact import Fact, family, has_placeholder
from services.lib.facts.rules import _RULES

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
# Which relations may have a subject other than the user (templates conjugate for it).
_OTHER_SUBJECT_OK = frozenset({"person_name", "lives_in", "works_at", "job", "birthday", "age", "favourite",
                               "allergy"})


def _sentences(text: str) -> list[str]:
    text = text.replace("’", "'").replace("‘", "'")
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def extract_facts(text: str, *, memory_id: str = "", seq: int = 0, ts: float = 0.0) -> list[Fact]:
    """The facts a (redacted) user message states, in the order they are stated.

    Questions ("Do I live in Berlin?") state nothing; values with a redaction
    placeholder are dropped; one (subject, relation, value) appears once.
    ``ts`` (the memory's time) turns "today"/"tomorrow" into dates.
    """
    found: list[tuple[int, int, Fact]] = []
    seen: set[tuple[str, str, str]] = set()
    for index, sentence in enumerate(_sentences(text)):
        if sentence.endswith("?"):
            continue
        for pattern, handler in _RULES:
            for match in pattern.finditer(sentence):
                for subject, relation, value in handler(match, sentence, ts):  # type: ignore[operator]
                    value = value.strip()
                    if not value or has_placeholder(value) or has_placeholder(subject):
                        continue
                    if subject != "user" and family(relation) not in _OTHER_SUBJECT_OK | {
                            "pet_name", "pet_species", "preference", "deadline", "age"}:
                        continue
                    key = (subject.lower(), relation, value.lower())
                    if key in seen:
                        continue
                    seen.add(key)
                    found.append((index, match.start(),
                                  Fact(subject=subject, relation=relation, value=value, statement=sentence,
                                       memory_id=memory_id, seq=seq)))
    found.sort(key=lambda item: (item[0], item[1]))
    return [fact for _, _, fact in found]
