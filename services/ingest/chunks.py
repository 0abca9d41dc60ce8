"""What one memory is, and what its vector says (issue 12, parts 5 and 7).

A short prose turn often states several facts in one go ("Hi! My name is
Priya and my dog is called Biscuit. I work as a nurse at St. Olaf
hospital."). As one memory its vector is an average of all three, and "where
do I work?" reached cosine 0.20 with it (below chat's recall_min_score 0.35)
against 0.43 for the sentence alone. So a prose turn is stored as one memory
per statement sentence; a sentence that states nothing on its own ("Hi!",
"Busy day.") joins its neighbour. Each chunk keeps the turn's id, timestamp
and tags (memory ids ``m<seq>.<chunk>``).

A long paste (a turn of more than LONG_PASTE_CHARS characters that is not a
handful of personal statements), and any verbatim or multi-line material,
becomes 512..1,000-character chunks with 10-20% overlap, cut at paragraph,
sentence or line ends (:func:`services.lib.memory.split.split_paste`); each
chunk keeps the turn's id, timestamp and tags like any memory. A long turn of
at most MAX_PERSONAL_SENTENCES sentences, most of them in the first person
("I ...", "my ..."), is someone telling about themselves: one memory per
sentence, as for a short turn.

The vector of a memory that states a fact is the embedding of its text
*plus the question that asks for that fact* (the trainer's own question
templates: "I work as a nurse at St. Olaf hospital. Where do I work?"). The
user's question is what recall compares with, and the expansion closes the
gap between the two forms: "where do we live?" against "Actually, we moved
from Leeds to Bristol." went from 0.29 to 0.44. Only the vector changes; the
memory's text is what the user said.
"""

from __future__ import annotations

import re

from services.ingest.questions import sentences

MIN_CHUNK_WORDS = 4
MAX_PROSE_WORDS = 150  # longer (and not personal statements): a paste
LONG_PASTE_CHARS = 1000  # longer (and not personal statements): a paste
MAX_PERSONAL_SENTENCES = 10
PERSONAL_SHARE = 0.6  # of the sentences in the first person
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|i'd|my|mine|me|we|we're|our|us)\b", re.IGNORECASE)


def _personal_statements(text: str) -> bool:
    """A handful of sentences, most about the speaker: someone telling about themselves."""
    parts = sentences(text)
    personal = sum(1 for part in parts if _FIRST_PERSON.search(part))
    return 0 < len(parts) <= MAX_PERSONAL_SENTENCES and personal >= PERSONAL_SHARE * len(parts)


def _is_paste(text: str) -> bool:
    from services.ingest.route import features

    f = features(text)
    if f["code"] or f["json"] or f["log"] or f["url"]:
        return True
    if len(text) > LONG_PASTE_CHARS or f["n_words"] > MAX_PROSE_WORDS:
        return "\n" in text.strip() or not _personal_statements(text)
    return "\n" in text.strip()


def _states_something(sentence: str) -> bool:
    from services.ingest.supersede import fact_pairs

    return len(sentence.split()) >= MIN_CHUNK_WORDS or bool(fact_pairs(sentence))


def memory_chunks(text: str) -> list[str]:
    """The memories one (redacted, question-free) turn becomes."""
    from services.lib.memory.split import split_paste

    if not text.strip():
        return []
    if _is_paste(text):
        return split_paste(text)
    parts = sentences(text)
    chunks: list[str] = []
    pending = ""
    for part in parts:
        joined = f"{pending} {part}".strip()
        if _states_something(part):
            chunks.append(joined)
            pending = ""
        else:
            pending = joined
    if pending:
        if chunks:
            chunks[-1] = f"{chunks[-1]} {pending}"
        else:
            chunks.append(pending)
    return chunks or [text.strip()]


def expanded(text: str) -> str:
    """The text to embed for a memory: its words, then the questions that ask for its facts."""
    from services.lib.facts import extract_facts, questions

    asks = []
    for fact in extract_facts(text):
        for q in questions(fact)[:1]:
            if q not in asks:
                asks.append(q)
    return f"{text} {' '.join(asks)}" if asks else text
