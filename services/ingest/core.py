"""The socket-free ingest core: one logged turn in, memory and events out.

Pipeline per ``chat.turn_completed`` (DESIGN.md, step 3):
opt-out tags -> redact -> drop questions -> route -> chunk -> embed -> dedupe
-> supersede -> index.

What is remembered is what the *user* said (redacted, tags stripped): it is
what a person expects to be remembered, and a small model's replies are too
often wrong to be worth recalling. The assistant's text stays in the log.

Exactly once, across crashes: the handler first logs its decision event
(``memory.stored`` / ``memory.skipped`` / ``memory.failed``) with a msg_id
derived from the turn's seq — so re-sending it after a crash is a no-op —
and then commits the memories *and* the cursor in one SQLite transaction.
A crash between the two replays the turn: the event dedupes, the memories
are added once.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol.envelope import Envelope, new_envelope
from protocol.events import ChatTurnCompleted, MemoryFailed, MemorySkipped, MemoryStored
from protocol.ingest_api import MAX_RECALL_K, MemoryInfo, RecalledMemory
from services.ingest.chunks import expanded
from services.ingest.questions import statements_only
from services.ingest.route import RouteDecision, apply_opt_outs, route_default
from services.ingest.supersede import fact_pairs, superseded_by
from services.ingest.tags import find_tags, strip_tags
from services.lib.privacy.names import NameKeys, restore_name
from services.lib.privacy.redact import find_spans, redact

CURSOR_KEY = "cursor_seq"
RECALL_ROUTES = ("rag", "both")
NEAR_DUPLICATE_COSINE = 0.97
# A memory that mentions a name the query names ranks this much above its cosine similarity
# (services/lib/privacy/names.py; chosen on bench/bench_retrieval.py, see README "Memory").
NAME_MATCH_BONUS = 0.3
MAX_TURN_CHARS = 32_000

# Emits an event to the log and returns only once it is committed.
EmitFn = Callable[[Envelope], None]


def normalized_sha(text: str) -> str:
    """Exact-duplicate key: case and whitespace do not make a new memory."""
    return hashlib.sha256(re.sub(r"\s+", " ", text.strip().lower()).encode()).hexdigest()


def memory_id(seq: int, chunk: int) -> str:
    return f"m{seq}.{chunk}"


def decision_msg_id(seq: int) -> str:
    return f"mem-{seq}"


@dataclass
class IngestCounters:
    stored: int = 0
    skipped: int = 0
    failed: int = 0
    redact_s: float = 0.0
    route_s: float = 0.0
    embed_s: float = 0.0
    index_s: float = 0.0


class IngestCore:
    def __init__(self, index: Any, embedder: Any, *, router: Callable[[str, Any], RouteDecision] | None = None,
                 chunker: Callable[[str], list[str]] | None = None, names: NameKeys | None = None,
                 redact_names: bool = False) -> None:
        """``names``: hash redacted names for recall by name (None: recall by meaning only).
        ``redact_names``: names become [NAME] too (``ingest.redact_names``; default: kept)."""
        from services.ingest.chunks import memory_chunks

        self.index = index
        self.embedder = embedder
        self.names = names
        self.redact_names = redact_names
        self.router = router or (lambda text, _vector: route_default(text))
        self.chunker = chunker or memory_chunks
        self.counters = IngestCounters()

    @property
    def cursor(self) -> int:
        return int(self.index.get_meta(CURSOR_KEY) or 0)

    # -- one turn -----------------------------------------------------------
    def handle(self, env: Envelope, emit: EmitFn) -> None:
        """Handle one logged event (only chat turns matter); idempotent by seq."""
        seq = env.seq or 0
        if not isinstance(env.body, ChatTurnCompleted) or seq <= self.cursor:
            return
        try:
            event, records, vectors = self.decide(seq, env.body, env.ts)
        except Exception as exc:  # a poison turn must not stop the pipeline
            event = MemoryFailed(stage=getattr(exc, "stage", "ingest"), error=type(exc).__name__,
                                 turn_seq=seq, detail=str(exc)[:500])
            records, vectors = [], None
        emit(new_envelope(event, source="ingest", msg_id=decision_msg_id(seq), parent_id=env.msg_id))
        started = time.perf_counter()
        supersede = self._correcting(event, records) if isinstance(event, MemoryStored) else {}
        self.index.add(records, vectors, meta={CURSOR_KEY: str(seq)}, supersede=supersede)
        self.counters.index_s += time.perf_counter() - started
        match event:
            case MemoryStored():
                self.counters.stored += 1
            case MemorySkipped():
                self.counters.skipped += 1
            case _:
                self.counters.failed += 1

    def _correcting(self, event: MemoryStored, records: list[Any]) -> dict[str, str]:
        """Each superseded memory -> the new chunk that restates its facts."""
        out = {}
        for old in event.supersedes:
            held = set(self.index.facts_of(old))
            out[old] = next((r.memory_id for r in records if held <= {k for k, _ in r.facts}), records[0].memory_id)
        return out

    def decide(self, seq: int, turn: ChatTurnCompleted, ts: float):  # noqa: ANN201
        """(event, records, vectors) for one turn, without side effects."""
        from services.lib.memory.index import MemoryRecord

        if turn.erased:
            return MemorySkipped(turn_seq=seq, reason="erased by forget", session_id=turn.session_id), [], None
        tags = find_tags(turn.user_text)
        if "private" in tags:
            return MemorySkipped(turn_seq=seq, reason="#private: kept only in the raw log",
                                 session_id=turn.session_id, tags=tags), [], None
        if len(turn.user_text) > MAX_TURN_CHARS:
            raise _StageError("route", f"turn of {len(turn.user_text)} characters exceeds {MAX_TURN_CHARS}")
        started = time.perf_counter()
        clean = strip_tags(turn.user_text)
        redaction = redact(clean, names=self.redact_names)
        # Recall by name works in both modes: with names kept, the keyed hashes of the names a
        # memory mentions still let a question by name rank it first (bench/bench_retrieval.py:
        # recall@1 0.82 without them, see README "Memory").
        name_spans = redaction.spans if self.redact_names else find_spans(clean, names=True)
        names = self.names.from_spans(clean, name_spans) if self.names is not None else []
        self.counters.redact_s += time.perf_counter() - started
        counts = dict(redaction.counts)
        # A question is a recall query, never a memory: keep only what the turn states.
        text = statements_only(redaction.text)
        if not text:
            return MemorySkipped(turn_seq=seq, reason="a question: a recall query, not a memory",
                                 score=1.0, session_id=turn.session_id, tags=tags, redactions=counts), [], None

        chunks = self.chunker(text) or [text]
        # The router sees the whole turn's vector (what it was trained on); each memory's vector
        # is its text plus the questions that ask for its facts (services/ingest/chunks.py).
        to_embed = [expanded(chunk) for chunk in chunks]
        whole_is_first = to_embed[0] == text
        started = time.perf_counter()
        try:
            embedded = self.embedder.embed(to_embed if whole_is_first else [text, *to_embed])
        except Exception as exc:
            raise _StageError("embed", f"embedding failed: {exc}") from exc
        route_vector, vectors = (embedded[0], embedded) if whole_is_first else (embedded[0], embedded[1:])
        self.counters.embed_s += time.perf_counter() - started

        started = time.perf_counter()
        decision = self.router(text, route_vector)
        route, note = apply_opt_outs(decision.route, tags) if decision.route != "skip" else ("skip", "")
        self.counters.route_s += time.perf_counter() - started
        reason = f"{decision.reason}; {note}" if note else decision.reason
        if route == "skip":
            return MemorySkipped(turn_seq=seq, reason=reason, score=decision.score, session_id=turn.session_id,
                                 tags=tags, redactions=counts), [], None
        if self.index.has_text(normalized_sha(text)):
            return MemorySkipped(turn_seq=seq, reason="exact duplicate of an earlier memory",
                                 score=1.0, session_id=turn.session_id, tags=tags, redactions=counts), [], None
        if len(chunks) == 1:
            superseded = self.index.superseded()  # restating an old value is a correction, not a duplicate
            duplicate = next((h for h in self.index.search(vectors[0], 4) if h.memory_id not in superseded
                              and h.score >= NEAR_DUPLICATE_COSINE), None)
            if duplicate is not None:
                return MemorySkipped(turn_seq=seq, reason="near duplicate of an earlier memory",
                                     score=float(duplicate.score), session_id=turn.session_id, tags=tags,
                                     redactions=counts, duplicate_of=duplicate.memory_id), [], None
        records = [MemoryRecord(memory_id=memory_id(seq, i), seq=seq, chunk=i, session_id=turn.session_id,
                                ts=ts, route=route, tags=tags, text=chunk,
                                text_sha256=normalized_sha(text) if i == 0 else normalized_sha(chunk),
                                names=names, facts=fact_pairs(chunk) if len(chunk) < 2000 else [])
                   for i, chunk in enumerate(chunks)]
        supersedes = sorted({old for r in records if r.facts for old in superseded_by(self.index, r.facts)})
        event = MemoryStored(turn_seq=seq, memory_ids=[r.memory_id for r in records], route=route,
                             score=round(decision.score, 4), reason=reason, session_id=turn.session_id,
                             tags=tags, redactions=counts, chunks=len(records), supersedes=supersedes)
        return event, records, vectors

    # -- recall / inspection --------------------------------------------------
    def recall(self, query: str, k: int, min_score: float = 0.0) -> tuple[list[RecalledMemory], float, float]:
        """Top ``k`` recallable memories for ``query``; (memories, embed_ms, search_ms)."""
        k = max(1, min(k, MAX_RECALL_K))
        started = time.perf_counter()
        # The query is embedded, never stored: redacting it only hurts (a
        # "[NAME]" query matches every memory with a redacted name; measured
        # by bench/bench_retrieval.py).
        vector = self.embedder.embed([query])[0]
        named = self.names.query_words(query) if self.names is not None else {}
        embedded = time.perf_counter()
        # Candidates: the nearest by meaning, and every memory that mentions a name the query
        # names (redacted in the memory, so invisible to the embedder); the latter rank higher
        # and show the name as the query spells it (services/lib/privacy/names.py).
        found: dict[str, tuple[float, list[str], Any]] = {
            h.memory_id: (float(h.score), [], h) for h in self.index.search(vector, k * 4)}
        for h, keys in self.index.search_names(vector, sorted(named)) if named else []:
            words = sorted({named[key] for key in keys}, key=query.find)  # as the query orders them
            found[h.memory_id] = (float(h.score) + NAME_MATCH_BONUS, words, h)
        superseded = self.index.superseded()  # a corrected memory is kept, never recalled
        ranked = sorted((item for mid, item in found.items() if mid not in superseded),
                        key=lambda item: (-item[0], item[2].record.seq, item[2].record.chunk))
        memories = [
            RecalledMemory(memory_id=h.memory_id, score=round(score, 4), text=restore_name(h.record.text, words),
                           turn_seq=h.record.seq, ts=h.record.ts, route=h.record.route,
                           session_id=h.record.session_id, name_match=bool(words))
            for score, words, h in ranked if h.record.route in RECALL_ROUTES and score >= min_score
        ][:k]
        done = time.perf_counter()
        return memories, (embedded - started) * 1000, (done - embedded) * 1000


def memory_info(record: Any, forgotten: bool = False, superseded_by: str = "", merged_into: str = "") -> MemoryInfo:
    return MemoryInfo(memory_id=record.memory_id, turn_seq=record.seq, chunk=record.chunk, ts=record.ts,
                      route=record.route, tags=list(record.tags), text=record.text,
                      session_id=record.session_id, forgotten=forgotten, superseded_by=superseded_by,
                      merged_into=merged_into)


class _StageError(RuntimeError):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
