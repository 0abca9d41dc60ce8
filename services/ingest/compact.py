"""`circ memory compact`: merge near-duplicate memories (issue 12, part 7).

At ingest a turn is skipped when it is a near duplicate (cosine >= 0.97) of
a live memory, but only a one-chunk turn is checked, and a memory said again
in other words ("My sister Ana lives in Lisbon." / "Remember that my sister
Ana lives in Lisbon") stays below that. Compacting compares every live, not
superseded memory with every other (the stored vectors, block by block) and
merges each pair at or above the threshold:

- the *oldest* memory is kept and the newer ones are marked superseded by it
  (the ``superseded`` table: kept, listed as merged, never recalled nor
  trained on; nothing is deleted). Oldest, not longest: it is the rule ingest
  already applies when it skips a near duplicate (the first one stays), it
  keeps the memory id the night may already have trained on, and a
  correction (services/ingest/supersede.py) always supersedes an *older*
  memory, so "merged into an older one" tells a merge from a correction
  without another table;
- a memory is only merged into one whose route covers its own (the same
  route, or ``both``): merging a ``rag`` memory into a ``lora`` one would take
  it out of recall;
- chunks of one turn are never merged with each other (a paste's chunks are
  different parts of it, however alike its log lines are);
- a memory is only merged when it *says nothing the kept one does not*: every
  word of it is in the kept memory, or is a word that carries no fact
  ("remember", "just so you know", "as I said", articles, pronouns). Cosine
  alone cannot tell values apart: on bench/bench_compact.py "the Cirrus
  project is due at the end of October" and "... of August" scored 0.967,
  two card numbers with different expiry dates 0.966, "the squeaky door in
  the hallway" and "... in the kitchen" 0.925;
- each newer memory goes to the most similar kept memory (ties: the oldest).

Each kept memory's merge is logged as ``memory.merged`` *before* it is
applied (like ``memory.edited``), and applying is idempotent, so the
consumer's replay and a rebuild from the log (services/ingest/rebuild.py)
mark the same memories. The comparison holds ingest's one thread for about a
second per 10,000 memories.

Known gap: compact works on the index at ingest's cursor, and its event is
logged after any turn that was logged but not yet handled; a rebuild handles
those turns first. Only if one of them corrects, or is a 0.97 near duplicate
of, a memory the compact merges can the rebuilt index differ (in which
memory supersedes which).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocol.envelope import Envelope, new_envelope
from protocol.events import MemoryMerged
from protocol.ingest_api import (
    MIN_COMPACT_COSINE,
    CompactMemories,
    CompactResult,
    MemoryMerge,
    MergedMemory,
)
from services.common.logging import get_logger

log = get_logger("ingest.compact")

# Chosen on bench/bench_compact.py (README, "Memory a person would trust"): from 0.85 to 0.92 the
# same restatements merge (every one whose route allows it) and no different facts do (the word
# check below does that part); 0.90 keeps a margin on both sides.
DEFAULT_COMPACT_COSINE = 0.90
BLOCK_ROWS = 256  # rows of the similarity matrix at a time (256 x 100k floats = 100 MB)
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")
# Words that state no fact of their own: a memory that adds only these to another says the same.
# Negations ("not", "never") and every content word are absent on purpose.
NO_FACT_WORDS = frozenset(
    "a an the and or so that this is are was were be am i i'm im my me we our us you your it its in on at "
    "of to for with by as just oh also again really remember know knew said told mention mentioned before "
    "already btw way well ok okay yes hey hi please note fyi reminder reminding".split())


@dataclass(frozen=True)
class Merge:
    kept: Any  # MemoryRecord
    merged: list[tuple[Any, float]]  # (MemoryRecord, cosine to the kept one), oldest first


def _covers(kept_route: str, route: str) -> bool:
    return kept_route == route or kept_route == "both"


def words(text: str) -> set[str]:
    return {w.replace("’", "'") for w in _TOKEN.findall(text.casefold())}


def adds_nothing(text: str, kept_text: str) -> bool:
    """Does ``text`` say nothing that ``kept_text`` does not (word by word)?"""
    return words(text) - words(kept_text) <= NO_FACT_WORDS


def find_merges(index: Any, threshold: float, *, word_check: bool = True) -> tuple[list[Merge], int]:
    """The merges compacting at ``threshold`` would make; (merges, memories compared).
    ``word_check`` False: by cosine alone (bench/bench_compact.py measures what the check does)."""
    records, matrix = index.recallable_vectors()
    n = len(records)
    if n < 2:
        return [], n
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    merged_into: dict[int, tuple[int, float]] = {}
    for lo in range(0, n, BLOCK_ROWS):
        hi = min(n, lo + BLOCK_ROWS)
        sims = unit[lo:hi] @ unit[:hi].T  # only older memories (lower rows) can be kept
        for row in range(hi - lo):
            j = lo + row
            best, best_score = -1, -1.0
            for i in np.nonzero(sims[row, :j] >= threshold)[0]:
                i = int(i)
                score = float(sims[row, i])
                if (i in merged_into or records[i].seq == records[j].seq
                        or not _covers(records[i].route, records[j].route)
                        or (word_check and not adds_nothing(records[j].text, records[i].text))):
                    continue
                if score > best_score:
                    best, best_score = i, score
            if best >= 0:
                merged_into[j] = (best, best_score)
    groups: dict[int, list[tuple[Any, float]]] = {}
    for j, (i, score) in sorted(merged_into.items()):
        groups.setdefault(i, []).append((records[j], score))
    return [Merge(kept=records[i], merged=group) for i, group in sorted(groups.items())], n


def compact(core: Any, request: CompactMemories, emit: Callable[[Envelope], int]) -> Any:
    """Answer a CompactMemories request: find the merges, and unless a dry run log and apply each."""
    from protocol.service_api import ErrorReply
    from services.ingest.core import memory_info

    threshold = request.threshold or DEFAULT_COMPACT_COSINE
    if not (math.isfinite(threshold) and MIN_COMPACT_COSINE <= threshold <= 1.0):
        return ErrorReply(code="bad_request", request_id=request.request_id,
                          message=f"--threshold must be a cosine similarity between {MIN_COMPACT_COSINE} and 1 "
                                  f"(default {DEFAULT_COMPACT_COSINE}); got {threshold}")
    merges, compared = find_merges(core.index, threshold)
    replies = []
    for merge in merges:
        seq = 0
        if not request.dry_run:
            event = MemoryMerged(kept_id=merge.kept.memory_id, merged_ids=[r.memory_id for r, _ in merge.merged],
                                 scores=[round(s, 4) for _, s in merge.merged], threshold=threshold)
            seq = emit(new_envelope(event, source="ingest"))
            apply_merged(core, event)
        replies.append(MemoryMerge(kept=memory_info(merge.kept), event_seq=seq or 0, merged=[
            MergedMemory(memory_id=r.memory_id, score=round(s, 4), text=r.text) for r, s in merge.merged]))
    log.info("ingest.compacted", threshold=threshold, compared=compared, kept=len(merges),
             merged=sum(len(m.merged) for m in merges), dry_run=request.dry_run)
    return CompactResult(request_id=request.request_id, merges=replies, threshold=threshold,
                         dry_run=request.dry_run, compared=compared)


def apply_merged(core: Any, event: MemoryMerged) -> int:
    """Mark the merged memories superseded by the kept one; how many were newly marked
    (0 on replay, or when the kept memory is gone)."""
    return core.index.mark_superseded(event.kept_id, list(event.merged_ids))


def merged_into(index: Any, by_id: str, record: Any) -> str:
    """``by_id`` when the memory superseding ``record`` is older (a merge), else "" (a correction)."""
    if not by_id:
        return ""
    by = index.get(by_id, include_forgotten=True)
    return by_id if by is not None and (by.seq, by.chunk) < (record.seq, record.chunk) else ""
