"""What one memory is, and what its vector says (issue 12, parts 5 and 7).

A short prose turn often states several facts in one go ("Hi! My name is
Priya and my dog is called Biscuit. I work as a nurse at St. Olaf
hospital."). As one memory its vector is an average of all three, and "where
do I work?" reached cosine 0.20 with it (below chat's recall_min_score 0.35)
against 0.43 for the sentence alone. So a prose turn is stored as one memory
per statement sentence; a sentence that states nothing on its own ("Hi!",
"Busy day.") joins its neighbour. Each chunk keeps the turn's id, timestamp
and tags (memory ids ``m<seq>.<chunk>``). Verbatim material and long pastes
keep the word windows of :func:`services.lib.memory.index.chunk_text`.

The vector of a memory that states a fact is the embedding of its text
*plus the question that asks for that fact* (the trainer's own question
templates: "I work as a nurse at St. Olaf hospital. Where do I work?"). The
user's question is what recall compares with, and the expansion closes the
gap between the two forms: "where do we live?" against "Actually, we moved
from Leeds to Bristol." went from 0.29 to 0.44. Only the vector changes; the
memory's text is what the user said.
"""

from __future__ import annotations

from services.ingest.questions import sentences

MIN_CHUNK_WORDS = 4
MAX_PROSE_WORDS = 150  # longer: a paste, chunked in word windows


def _is_verbatim(text: str) -> bool:
    from services.ingest.route import features

    f = features(text)
    return bool(f["code"] or f["json"] or f["log"] or f["url"] or f["n_words"] > MAX_PROSE_WORDS)


def _states_something(sentence: str) -> bool:
    from services.ingest.supersede import fact_pairs

    return len(sentence.split()) >= MIN_CHUNK_WORDS or bool(fact_pairs(sentence))


def memory_chunks(text: str) -> list[str]:
    """The memories one (redacted, question-free) turn becomes."""
    from services.lib.memory.index import chunk_text

    if not text.strip():
        return []
    if _is_verbatim(text) or "\n" in text.strip():
        return chunk_text(text)
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
