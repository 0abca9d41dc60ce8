"""Long pastes into overlapping chunks cut at paragraph, sentence or line ends (issue 12, part 7).

A pasted article, log or set of notes is several memories: one vector for
4,000 characters averages every topic in it away, and MiniLM reads only the
first 256 tokens (~1,000 characters) of what it embeds. So a paste becomes
chunks of ``min_chars``..``max_chars`` characters (512..1,000), each a slice of
the original text (newlines and spacing kept), that end where the text ends a
unit: a paragraph (blank line) if one falls in that window, else a sentence or
a line, else a word. Each chunk after the first starts 10–20% of the previous
chunk's length before its end, again at the best boundary in that window, so
a fact that straddles a cut is whole in one of the two chunks.

Why not a library: semantic-text-splitter (the text-splitter crate, checked
0.33.1) cuts at the same kinds of boundaries, but its overlap stops at a
paragraph boundary (on bench_ingest's notes, paragraph-aligned chunks shared
0 characters); langchain-text-splitters pulls in langchain-core. This is ~60
lines with no dependency.
"""

from __future__ import annotations

import re

MAX_CHARS = 1000
MIN_CHARS = 512
OVERLAP = (0.10, 0.20)  # of the previous chunk's length

# Positions where a unit starts, by how good a place to cut they are: after a blank line (2),
# after a sentence end or a newline (1), after any other whitespace (0).
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE = re.compile(r"(?<=[.!?])[\"'’”)]*\s+|\n\s*")
_WORD = re.compile(r"\s+")
# "St. Olaf", "Dr. Lee", "e.g. this": a full stop that ends no sentence.
_ABBREVIATION = re.compile(r"\b(?:st|dr|mr|mrs|ms|prof|mt|jr|sr|e\.g|i\.e|etc|vs|no|approx)\.$", re.IGNORECASE)


def _boundaries(text: str) -> dict[int, int]:
    """Start offset of each unit -> its level (2 paragraph, 1 sentence/line, 0 word)."""
    levels: dict[int, int] = {}
    for level, pattern in ((0, _WORD), (1, _SENTENCE), (2, _PARAGRAPH)):
        for m in pattern.finditer(text):
            if level == 1 and "\n" not in m.group() and _ABBREVIATION.search(text[max(0, m.start() - 6):m.start()]):
                continue
            if 0 < m.end() < len(text):
                levels[m.end()] = level
    return levels


def _best(levels: dict[int, int], lo: int, hi: int, *, latest: bool) -> int | None:
    """The best-level boundary in [lo, hi]; among equals the latest (or earliest)."""
    found = [(level, pos if latest else -pos) for pos, level in levels.items() if lo <= pos <= hi]
    if not found:
        return None
    _, pos = max(found)
    return pos if latest else -pos


def split_paste(text: str, max_chars: int = MAX_CHARS, min_chars: int = MIN_CHARS,
                overlap: tuple[float, float] = OVERLAP) -> list[str]:
    """``text`` as overlapping chunks of at most ``max_chars`` characters (one chunk if it fits).

    Every chunk but the last has at least ``min_chars`` characters (unless no boundary falls
    between ``min_chars`` and ``max_chars``: then the cut is at ``max_chars``); each chunk after
    the first repeats the last ``overlap`` fraction (10–20%) of the one before it.
    """
    if not 0 < min_chars <= max_chars or not 0 < overlap[0] <= overlap[1] < 1:
        raise ValueError("need 0 < min_chars <= max_chars and 0 < overlap low <= high < 1")
    text = text.strip()
    if len(text) <= max_chars:
        return [text] if text else []
    levels = _boundaries(text)
    chunks: list[str] = []
    start = 0
    while len(text) - start > max_chars:
        end = _best(levels, start + min_chars, start + max_chars, latest=True) or start + max_chars
        chunk = text[start:end].rstrip()
        chunks.append(chunk)
        size = len(chunk)
        # The next chunk starts inside this one: as much overlap as the window allows, at the
        # best boundary in it (a hard cut only inside a single 100+ character token).
        lo, hi = start + size - int(size * overlap[1]), start + size - int(size * overlap[0])
        start = _best(levels, lo, hi, latest=False) or start + size - int(size * sum(overlap) / 2)
    chunks.append(text[start:])
    return chunks
