"""The vector memory: SQLite is the truth, a usearch HNSW index is a cache of it.

``memories.db`` (WAL, ``synchronous=FULL``, ``secure_delete=ON``) holds every
memory: its redacted text, metadata and float32 vector. ``vectors.usearch``
holds the same vectors in an HNSW graph for fast cosine search. It is written
only by :meth:`MemoryIndex.save` (temp file, fsync, rename, fsync dir), and on
open it is checked against the database (sha256 recorded at save, key set,
count) and repaired or rebuilt from the stored vectors when it disagrees —
no re-embedding. ``MemoryIndex.status`` says which happened and why.

Keys: each memory gets a usearch key (an integer) that is never reused, and a
key's vector never changes, so a loadable file with the right key set is the
right cache: a stale file is repaired by adding and removing keys.

Forgetting leaves a tombstone row (id, key, seq, chunk, session, time, route)
so a replayed turn is not stored again, and erases everything else: text,
hash, tags and vector in SQLite (``secure_delete`` zeroes the freed bytes; the
WAL is checkpointed and truncated), and the vector in usearch. usearch keeps a
removed vector's bytes in its slot (they would be saved with the file), so
forget() overwrites every free slot with a placeholder before it saves.

Every vector in one index comes from one embedder: the index records its
``identity`` and dimension in ``meta`` (``index.embedder``, ``index.dim``),
and opening it for another embedder raises :class:`EmbedderMismatch` before
anything is written. Indexes from before the identity was recorded were all
built by MiniLM (:data:`UNRECORDED_EMBEDDER`). :func:`read_meta` reads the
record without opening the index.

One ``MemoryIndex`` per directory and process; calls are serialised by a lock.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from services.common.atomic import fsync_dir
from services.common.digest import file_sha256 as _sha256_file
from services.common.digest import text_sha256
from services.common.hostinfo import sqlite_durability_pragmas

DB_NAME = "memories.db"
VECTORS_NAME = "vectors.usearch"
# What built an index that records no embedder: MiniLM, the only one before it was recorded.
UNRECORDED_EMBEDDER = "minilm:all-MiniLM-L6-v2"
EMBEDDER_KEY = "index.embedder"
DIM_KEY = "index.dim"
# What an index holds beyond vectors and rows. 2: keyed name hashes (memory_names). An older
# index with memories in it is rebuilt from the log by ingest, like one of another embedder.
FORMAT_KEY = "index.format"
FORMAT = "2"


class EmbedderMismatch(ValueError):
    """The index holds vectors of another embedder (or dimension) than the one asked for."""

    def __init__(self, path: Path, stored: str, stored_dim: int, wanted: str, wanted_dim: int) -> None:
        self.stored, self.stored_dim, self.wanted, self.wanted_dim = stored, stored_dim, wanted, wanted_dim
        super().__init__(f"{path} holds {stored_dim}-dimensional vectors of {stored or 'an unrecorded embedder'}, "
                         f"not {wanted_dim}-dimensional vectors of {wanted or 'the requested embedder'}: the two "
                         f"cannot be mixed; rebuild it from the log (`circ memory rebuild`)")


class IndexDamaged(ValueError):
    """``memories.db`` fails SQLite's integrity check (a torn or corrupted page, not a database).

    The index is derived state: its owner rebuilds it from the log (ingest does at start)."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem
        self.stored = f"a damaged index ({problem})"
        super().__init__(f"{path} is damaged ({problem}): rebuild it from the log (`circ memory rebuild`; "
                         f"ingest does it by itself at start)")


def read_meta(directory: Path) -> dict[str, str]:
    """The ``meta`` table of the index in ``directory``, read-only ({} if there is none)."""
    db_path = Path(directory) / DB_NAME
    if not db_path.is_file():
        return {}
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            return dict(conn.execute("SELECT key, value FROM meta").fetchall())
        finally:
            conn.close()
    except sqlite3.Error:
        return {}


def _usearch() -> tuple[Any, Any]:
    """usearch's Index and MetricKind, loaded only after MLX.

    usearch's extension carries its own C++ runtime symbols; loaded first, it
    breaks MLX's CPU kernel compiler in the same process (every fused kernel
    source comes out truncated: "Failed to compile function"), which cost
    ingest its fused GELU and crashed the memory benchmark. MLX first, then
    usearch, is safe (tests/test_memory_index.py checks it in a fresh process).
    """
    from services.common.blas import preload_openblas

    preload_openblas()
    import mlx.core  # noqa: F401  (the load order is the point)
    from usearch.index import Index, MetricKind

    return Index, MetricKind
_SCRUB_BASE_KEY = 1 << 62  # placeholder keys, never handed out to memories
_META_PREFIX = "index."  # reserved meta keys; callers use their own (e.g. cursor_seq)
_WORD = re.compile(r"\S+")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    memory_id   TEXT PRIMARY KEY,
    key         INTEGER UNIQUE NOT NULL,
    seq         INTEGER NOT NULL,
    chunk       INTEGER NOT NULL DEFAULT 0,
    session_id  TEXT NOT NULL DEFAULT '',
    ts          REAL NOT NULL DEFAULT 0,
    route       TEXT NOT NULL DEFAULT '',
    tags        TEXT NOT NULL DEFAULT '[]',
    text        TEXT NOT NULL DEFAULT '',
    text_sha256 TEXT NOT NULL DEFAULT '',
    vector      BLOB,
    forgotten   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS memories_sha ON memories(text_sha256) WHERE forgotten = 0;
CREATE INDEX IF NOT EXISTS memories_seq ON memories(seq, chunk);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Keyed hashes of the names redacted from each memory (services/lib/privacy/names.py), never the names.
CREATE TABLE IF NOT EXISTS memory_names (
    name_key TEXT NOT NULL,
    key      INTEGER NOT NULL,
    PRIMARY KEY (name_key, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memory_names_by_memory ON memory_names(key);
-- Single-valued facts a memory states ("subject|relation" -> value, services/ingest/supersede.py),
-- and which memories a later correction replaced (kept, listed as such, never recalled).
CREATE TABLE IF NOT EXISTS memory_facts (
    fact_key  TEXT NOT NULL,
    memory_id TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (fact_key, memory_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS superseded (
    memory_id TEXT PRIMARY KEY,
    by_id     TEXT NOT NULL
) WITHOUT ROWID;
"""
# Memories found by a shared name, scored at most this many (a common name must not cost a scan).
NAME_MATCH_LIMIT = 200
EXACT_SEARCH_MAX = 20_000
_COLUMNS = "memory_id, seq, chunk, session_id, ts, route, tags, text, text_sha256, forgotten"


class MemoryRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One memory: a redacted chunk of a user's turn (``text`` is never raw)."""

    memory_id: str
    seq: int  # the chat.turn_completed event it came from
    chunk: int = 0
    session_id: str = ""
    ts: float = 0.0
    route: str = ""  # "rag" | "lora" | "both"
    tags: list[str] = []
    text: str = ""
    text_sha256: str = ""  # the caller's duplicate key; sha256(text) when empty
    forgotten: bool = False
    # Keyed hashes of the names redaction took from this memory (services.lib.privacy.names):
    # written with it, for recall by name; records read back leave it empty.
    names: list[str] = []
    # (fact_key, value) pairs this memory states (services.ingest.supersede): written with it.
    facts: list[tuple[str, str]] = []


class Hit(msgspec.Struct, frozen=True):
    memory_id: str
    score: float  # cosine similarity, 1.0 = same direction
    record: MemoryRecord


class IndexStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What opening the index did with ``vectors.usearch``, and why."""

    action: str  # "created" | "loaded" | "repaired" | "rebuilt"
    reason: str
    memories: int
    duration_ms: float


def chunk_text(text: str, max_words: int = 200, overlap_words: int = 40) -> list[str]:
    """Split a long text into windows of ``max_words`` words, ``overlap_words`` shared.

    Chunks are slices of the original text (its spacing and newlines kept).
    A text of at most ``max_words`` words is one chunk; blank text is none.
    """
    if max_words < 1 or not 0 <= overlap_words < max_words:
        raise ValueError("need max_words >= 1 and 0 <= overlap_words < max_words")
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    if not spans:
        return []
    if len(spans) <= max_words:
        return [text.strip()]
    step = max_words - overlap_words
    chunks = []
    for start in range(0, len(spans), step):
        window = spans[start:start + max_words]
        chunks.append(text[window[0][0]:window[-1][1]])
        if start + max_words >= len(spans):
            break
    return chunks


class MemoryIndex:
    def __init__(self, directory: Path, dim: int = 384, *, embedder: str | None = None,
                 check: bool = False) -> None:
        """Open (or create) the index in ``directory`` for ``dim``-dimensional vectors.

        ``embedder``: the identity of the embedder whose vectors go in; a new
        index records it, an existing one must have been built by it (else
        :class:`EmbedderMismatch`). ``None`` skips the check (tools, tests).
        ``check``: run SQLite's integrity check on ``memories.db`` first (every
        page) and raise :class:`IndexDamaged` if it fails; a file that is not a
        database at all raises it with or without ``check``.
        """
        started = time.perf_counter()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)  # private: what the user said
        self.dim = dim
        self.db_path = self.directory / DB_NAME
        self.vectors_path = self.directory / VECTORS_NAME
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        os.chmod(self.db_path, 0o600)  # SQLite gives the -wal and -shm files the same mode
        try:
            self._open_db(check)
        except sqlite3.DatabaseError as exc:  # "file is not a database", "disk image is malformed"
            self._db.close()
            self._db = None  # type: ignore[assignment]
            raise IndexDamaged(self.db_path, str(exc)) from exc
        stored_dim = self.get_meta(DIM_KEY)
        stored_embedder = self.get_meta(EMBEDDER_KEY)
        if stored_dim is not None and stored_embedder is None:
            stored_embedder = UNRECORDED_EMBEDDER
        if stored_dim is not None and (int(stored_dim) != dim
                                       or (embedder is not None and stored_embedder != embedder)):
            self._db.close()
            self._db = None  # type: ignore[assignment]
            raise EmbedderMismatch(self.db_path, stored_embedder or "", int(stored_dim), embedder or "", dim)
        stored_format = self.get_meta(FORMAT_KEY) or "1"
        if stored_format != FORMAT and self._scalar("SELECT COUNT(*) FROM memories WHERE forgotten = 0") == 0:
            self._set_many({FORMAT_KEY: FORMAT})  # nothing in it is missing what format 2 adds
            stored_format = FORMAT
        if stored_format != FORMAT and embedder is not None:
            self._db.close()
            self._db = None  # type: ignore[assignment]
            raise EmbedderMismatch(self.db_path, f"{stored_embedder} (index format {stored_format})",
                                   int(stored_dim or dim), embedder, dim)
        if stored_dim is None:
            self._set_many({DIM_KEY: str(dim), **({EMBEDDER_KEY: embedder} if embedder else {})})
        elif embedder is not None and self.get_meta(EMBEDDER_KEY) is None:
            self.set_meta(EMBEDDER_KEY, embedder)  # an unrecorded (MiniLM) index: record it now
        self.embedder = self.get_meta(EMBEDDER_KEY) or stored_embedder or ""
        self._next_key = self._scalar("SELECT COALESCE(MAX(key), 0) + 1 FROM memories")
        action, reason = self._open_vectors()
        self.status = IndexStatus(action=action, reason=reason, memories=len(self._ix),
                                  duration_ms=round((time.perf_counter() - started) * 1000, 1))

    # -- writing ----------------------------------------------------------------
    def add(self, records: list[MemoryRecord], vectors: np.ndarray | None, *,
            meta: dict[str, str] | None = None, supersede: dict[str, str] | None = None) -> int:
        """Insert new memories and ``meta`` in one transaction; return how many were new.

        Idempotent by memory_id: a record already stored (or forgotten) is
        skipped, so a caller can replay a turn and advance its cursor in
        ``meta`` atomically with the insert. ``supersede``: old memory_id -> the new
        memory_id that corrects it, marked in the same transaction.
        """
        matrix = self._check_vectors(vectors, len(records))
        with self._lock:
            rows, positions, seen = [], [], set()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for position, record in enumerate(records):
                    if record.memory_id in seen or self._exists(record.memory_id):
                        continue
                    seen.add(record.memory_id)
                    rows.append((record.memory_id, self._next_key + len(rows), record.seq, record.chunk,
                                 record.session_id, record.ts, record.route, json.dumps(list(record.tags)),
                                 record.text, record.text_sha256 or text_sha256(record.text),
                                 matrix[position].tobytes()))
                    positions.append(position)
                self._db.executemany(
                    "INSERT INTO memories (memory_id, key, seq, chunk, session_id, ts, route, tags, text, "
                    "text_sha256, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.executemany(
                    "INSERT OR IGNORE INTO memory_names (name_key, key) VALUES (?, ?)",
                    [(name, row[1]) for row, position in zip(rows, positions, strict=True)
                     for name in records[position].names])
                self._db.executemany(
                    "INSERT OR IGNORE INTO memory_facts (fact_key, memory_id, value) VALUES (?, ?, ?)",
                    [(key, records[position].memory_id, value) for position in positions
                     for key, value in records[position].facts])
                self._db.executemany("INSERT OR IGNORE INTO superseded (memory_id, by_id) VALUES (?, ?)",
                                     sorted((supersede or {}).items()))
                self._write_meta(meta or {})
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._next_key += len(rows)
            if rows:  # the cache follows the truth; a crash before save() is repaired on open
                self._ix.add(np.array([row[1] for row in rows], dtype=np.uint64), matrix[positions])
            return len(rows)

    def forget(self, memory_ids: list[str]) -> int:
        """Erase these memories (text, hash, tags, vector); return how many were live."""
        with self._lock:
            keys = [row[0] for ids in _batches(sorted(set(memory_ids))) for row in self._db.execute(
                f"SELECT key FROM memories WHERE forgotten = 0 AND memory_id IN ({_marks(ids)})", ids)]
            if not keys:
                return 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "UPDATE memories SET forgotten = 1, text = '', text_sha256 = '', tags = '[]', "
                    "vector = NULL WHERE key = ?", [(k,) for k in keys])
                self._db.executemany("DELETE FROM memory_names WHERE key = ?", [(k,) for k in keys])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            # Old page images in the WAL still hold the text until a checkpoint.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._ix.remove(np.array(keys, dtype=np.uint64))
            self._scrub_free_slots()
            self.save()
            return len(keys)

    def save(self) -> None:
        """Write ``vectors.usearch`` atomically and record its checksum in the database."""
        with self._lock:
            tmp = self.vectors_path.with_name(f".{VECTORS_NAME}.{os.getpid()}.tmp")
            try:
                self._ix.save(str(tmp))
                os.chmod(tmp, 0o600)
                digest = _sha256_file(tmp)
                with open(tmp, "rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(tmp, self.vectors_path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            fsync_dir(self.directory)
            # A crash before this line leaves a file with no matching checksum: rebuilt on open.
            self._set_many({_META_PREFIX + "file_sha256": digest, _META_PREFIX + "file_count": str(len(self._ix))})

    def rebuild(self) -> None:
        """Recreate the in-memory HNSW graph from the stored vectors (then call save())."""
        with self._lock:
            self._ix = self._fresh_index()
            keys, matrix = self._live_vectors()
            if len(keys):
                self._ix.add(keys, matrix)

    # -- reading ----------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int, *, exclude_forgotten: bool = True) -> builtins.list[Hit]:
        """The ``k`` memories most similar to ``vector`` (cosine), best first."""
        query = self._check_vectors(np.asarray(vector, dtype=np.float32).reshape(1, -1), 1)[0]
        with self._lock:
            if k < 1 or len(self._ix) == 0:
                return []
            # Below EXACT_SEARCH_MAX memories a brute-force search costs about a
            # millisecond and is exact: the live index and one rebuilt from the
            # log then give identical answers (HNSW's approximate graph depends
            # on insertion order, and a rebuild inserts in another order).
            matches = self._ix.search(query, min(k, len(self._ix)), threads=1,
                                      exact=len(self._ix) <= EXACT_SEARCH_MAX)
            keys = [int(key) for key in matches.keys]
            scores = {key: 1.0 - float(d) for key, d in zip(keys, matches.distances, strict=True)}
            records = self._records_by_key(keys)
        hits = [Hit(records[key].memory_id, scores[key], records[key]) for key in keys if key in records]
        if exclude_forgotten:
            hits = [h for h in hits if not h.record.forgotten]
        return hits

    def search_names(self, vector: np.ndarray,
                     name_keys: builtins.list[str]) -> builtins.list[tuple[Hit, builtins.list[str]]]:
        """Live memories carrying any of ``name_keys``, scored by cosine to ``vector``, best
        first, each with the keys it carries (sorted). At most NAME_MATCH_LIMIT memories (the
        newest) per call.
        """
        if not name_keys:
            return []
        query = self._check_vectors(np.asarray(vector, dtype=np.float32).reshape(1, -1), 1)[0]
        keys = sorted(set(name_keys))[:500]
        with self._lock:
            matched: dict[int, builtins.list[str]] = {}
            for key, name_key in self._db.execute(
                    f"SELECT n.key, n.name_key FROM memory_names n JOIN memories m ON m.key = n.key "
                    f"WHERE n.name_key IN ({_marks(keys)}) AND m.forgotten = 0 ORDER BY n.key DESC, n.name_key",
                    keys):
                if key in matched or len(matched) < NAME_MATCH_LIMIT:
                    matched.setdefault(key, []).append(name_key)
            ids = builtins.list(matched)
            rows = self._db.execute(f"SELECT key, vector FROM memories WHERE key IN ({_marks(ids)})",
                                    ids).fetchall() if ids else []
            records = self._records_by_key(ids)
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        scores = matrix @ query / (np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(query)))
        hits = [(Hit(records[row[0]].memory_id, float(score), records[row[0]]), matched[row[0]])
                for row, score in zip(rows, scores, strict=True) if row[0] in records]
        return sorted(hits, key=lambda pair: -pair[0].score)

    def facts_for(self, fact_keys: builtins.list[str]) -> builtins.list[tuple[str, str, str]]:
        """(memory_id, fact_key, value) of live, not superseded memories stating these facts."""
        keys = sorted(set(fact_keys))[:500]
        if not keys:
            return []
        with self._lock:
            return [tuple(row) for row in self._db.execute(
                f"SELECT f.memory_id, f.fact_key, f.value FROM memory_facts f JOIN memories m "
                f"ON m.memory_id = f.memory_id WHERE f.fact_key IN ({_marks(keys)}) AND m.forgotten = 0 "
                f"AND f.memory_id NOT IN (SELECT memory_id FROM superseded) ORDER BY m.seq, m.chunk", keys)]

    def facts_of(self, memory_id: str) -> dict[str, str]:
        """fact_key -> value for one memory."""
        with self._lock:
            return dict(self._db.execute("SELECT fact_key, value FROM memory_facts WHERE memory_id = ?",
                                         (memory_id,)).fetchall())

    def superseded(self) -> dict[str, str]:
        """Every superseded memory_id -> the memory that corrected it."""
        with self._lock:
            return dict(self._db.execute("SELECT memory_id, by_id FROM superseded").fetchall())

    def recallable_vectors(self) -> tuple[builtins.list[MemoryRecord], np.ndarray]:
        """Live, not superseded memories in (seq, chunk) order, with their stored vectors."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS}, vector FROM memories WHERE forgotten = 0 AND memory_id "
                                    "NOT IN (SELECT memory_id FROM superseded) ORDER BY seq, chunk").fetchall()
        matrix = np.frombuffer(b"".join(r[-1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return [_record(r[:-1]) for r in rows], matrix

    def mark_superseded(self, by_id: str, memory_ids: builtins.list[str]) -> int:
        """Mark live, not yet superseded memories as superseded by the live ``by_id`` (kept,
        never recalled nor trained on: ``circ memory compact``); how many were marked."""
        with self._lock:
            if not self._exists_live(by_id):
                return 0
            todo = [m for m in memory_ids if m != by_id and self._exists_live(m)
                    and self._db.execute("SELECT 1 FROM superseded WHERE memory_id = ?", (m,)).fetchone() is None]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO superseded (memory_id, by_id) VALUES (?, ?)",
                                     [(m, by_id) for m in todo])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return len(todo)

    def replace_text(self, memory_id: str, text: str, vector: np.ndarray) -> bool:
        """Replace a live memory's text and vector (``circ memory edit``); False if none is live."""
        matrix = self._check_vectors(np.asarray(vector, dtype=np.float32).reshape(1, -1), 1)
        with self._lock:
            row = self._db.execute("SELECT key FROM memories WHERE memory_id = ? AND forgotten = 0",
                                   (memory_id,)).fetchone()
            if row is None:
                return False
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("UPDATE memories SET text = ?, text_sha256 = ?, vector = ? WHERE key = ?",
                                 (text, text_sha256(text), matrix[0].tobytes(), row[0]))
                self._db.execute("DELETE FROM memory_facts WHERE memory_id = ?", (memory_id,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._ix.remove(np.array([row[0]], dtype=np.uint64))
            self._ix.add(np.array([row[0]], dtype=np.uint64), matrix)
            return True

    def find_duplicate(self, vector: np.ndarray, threshold: float = 0.97) -> Hit | None:
        """The closest live memory when its cosine similarity is at least ``threshold``."""
        hits = self.search(vector, 1)
        return hits[0] if hits and hits[0].score >= threshold else None

    def has_text(self, sha: str) -> bool:
        """Is a live memory stored under this ``text_sha256``?"""
        with self._lock:
            # A superseded memory does not count: saying "We live in Leeds" again after moving to
            # Bristol is a new correction, not a duplicate.
            return self._db.execute("SELECT 1 FROM memories WHERE text_sha256 = ? AND forgotten = 0 AND memory_id "
                                    "NOT IN (SELECT memory_id FROM superseded) LIMIT 1", (sha,)).fetchone() is not None

    def get(self, memory_id: str, *, include_forgotten: bool = False) -> MemoryRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM memories WHERE memory_id = ?",
                                   (memory_id,)).fetchone()
        record = None if row is None else _record(row)
        return record if record is not None and (include_forgotten or not record.forgotten) else None

    def list(self, limit: int = 20, offset: int = 0) -> builtins.list[MemoryRecord]:
        """Live memories, newest turn first."""
        return self._select("WHERE forgotten = 0 ORDER BY seq DESC, chunk LIMIT ? OFFSET ?",
                            (max(0, limit), max(0, offset)))

    def by_seq(self, seq: int) -> builtins.list[MemoryRecord]:
        """Live memories (chunks) of one turn."""
        return self._select("WHERE forgotten = 0 AND seq = ? ORDER BY chunk", (seq,))

    def trainable(self, after_seq: int = 0, after_chunk: int = -1,
                  limit: int = 500) -> builtins.list[MemoryRecord]:
        """Memories a night may train on, in (seq, chunk) order after (after_seq, after_chunk).

        ``after_chunk`` -1 (the default) starts after the whole turn ``after_seq``.

        Routed to training (lora/both), not forgotten, not superseded by a later
        correction (its value is the old one: services/ingest/supersede.py), not
        tagged #no-train. Keyset-paged, so pages stay consistent while ingest
        appends (new memories only ever come after the last page).
        """
        out: builtins.list[MemoryRecord] = []
        # after_chunk -1: after every chunk of turn after_seq (a page ends inside a turn otherwise).
        cursor = (after_seq, after_chunk if after_chunk >= 0 else 2**62)
        while len(out) < limit:
            page = self._select("WHERE forgotten = 0 AND route IN ('lora', 'both') AND (seq, chunk) > (?, ?)"
                                " AND memory_id NOT IN (SELECT memory_id FROM superseded)"
                                " ORDER BY seq, chunk LIMIT ?", (*cursor, limit))
            if not page:
                break
            out += [r for r in page if "no-train" not in r.tags]
            cursor = (page[-1].seq, page[-1].chunk)
        return out[:limit]

    def count_trainable(self, after_seq: int = 0) -> int:
        """How many memories :meth:`trainable` would return after ``after_seq`` (no limit)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT tags FROM memories WHERE forgotten = 0 AND route IN ('lora', 'both') AND seq > ?"
                " AND memory_id NOT IN (SELECT memory_id FROM superseded)", (after_seq,)).fetchall()
        return sum(1 for (tags,) in rows if "no-train" not in json.loads(tags or "[]"))

    def forgotten_ids(self) -> set[str]:
        """Every memory ever forgotten: no later dataset or replay may hold one."""
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT memory_id FROM memories WHERE forgotten = 1")}

    def find_text(self, needle: str, limit: int = 100) -> builtins.list[MemoryRecord]:
        """Live memories whose text contains ``needle`` (case-insensitive), newest first."""
        pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return self._select("WHERE forgotten = 0 AND text LIKE ? ESCAPE '\\' ORDER BY seq DESC, chunk LIMIT ?",
                            (pattern, max(0, limit)))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_route = dict(self._db.execute(
                "SELECT route, COUNT(*) FROM memories WHERE forgotten = 0 GROUP BY route").fetchall())
            forgotten = self._scalar("SELECT COUNT(*) FROM memories WHERE forgotten = 1")
            sizes = [p.stat().st_size for p in self.directory.iterdir()
                     if p.is_file() and p.name.startswith((DB_NAME, VECTORS_NAME))]
            return {"memories": sum(by_route.values()), "forgotten": forgotten, "by_route": by_route,
                    "indexed": len(self._ix), "dim": self.dim, "embedder": self.embedder, "bytes": sum(sizes),
                    "opened": self.status.action, "open_reason": self.status.reason}

    # -- meta (callers keep their cursor here) ------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self._set_many({key: value})

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                # Fold the WAL into the database and empty it before closing,
                # so a stopped ingest leaves no page images (possibly holding
                # since-forgotten text) in memories.db-wal.
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.close()
                self._db = None  # type: ignore[assignment]

    def __enter__(self) -> MemoryIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------
    def _open_db(self, check: bool) -> None:
        # synchronous=FULL (+ fullfsync on macOS) as for the event log: a stored memory and the
        # cursor beside it survive a power cut together.
        for pragma in ("PRAGMA journal_mode=WAL", *sqlite_durability_pragmas(), "PRAGMA secure_delete=ON"):
            self._db.execute(pragma)
        if check:
            rows = [r[0] for r in self._db.execute("PRAGMA quick_check(5)").fetchall()]
            if rows != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(rows))
        self._db.executescript(_SCHEMA)

    def _open_vectors(self) -> tuple[str, str]:
        """Load ``vectors.usearch`` if it matches the database; else repair or rebuild it."""
        live = self._scalar("SELECT COUNT(*) FROM memories WHERE forgotten = 0")
        if not self.vectors_path.exists():
            self.rebuild()
            return ("created", "new index") if live == 0 else ("rebuilt", f"{VECTORS_NAME} was missing")
        recorded = self.get_meta(_META_PREFIX + "file_sha256")
        if recorded is None or _sha256_file(self.vectors_path) != recorded:
            self.rebuild()
            return "rebuilt", f"{VECTORS_NAME} does not match the checksum recorded when it was saved"
        try:
            Index, _ = _usearch()
            index = Index.restore(str(self.vectors_path))
            problem = "not a usearch index" if index is None else ""
        except Exception as exc:  # any unreadable file is rebuilt
            index, problem = None, f"{type(exc).__name__}: {exc}"
        if index is not None and (index.ndim != self.dim or index.metric_kind != _usearch()[1].Cos):
            problem = f"{index.ndim} dimensions, {index.metric_kind}; expected {self.dim}, cosine"
        if problem:
            self.rebuild()
            return "rebuilt", f"{VECTORS_NAME} was unusable ({problem})"
        self._ix = index
        added, removed = self._reconcile()
        if added or removed:
            return "repaired", (f"{VECTORS_NAME} was older than the database: added {added}, "
                                f"removed {removed} vectors")
        return "loaded", f"{VECTORS_NAME} matches the database"

    def _reconcile(self) -> tuple[int, int]:
        """Make the loaded index hold exactly the live keys; (added, removed)."""
        live_keys = np.array([r[0] for r in self._db.execute(
            "SELECT key FROM memories WHERE forgotten = 0")], dtype=np.uint64)
        indexed = np.asarray(self._ix.keys, dtype=np.uint64) if len(self._ix) else np.zeros(0, np.uint64)
        extra = np.setdiff1d(indexed, live_keys)
        missing = np.setdiff1d(live_keys, indexed)
        if len(extra):
            self._ix.remove(extra)
            self._scrub_free_slots()
        if len(missing):
            keys, matrix = self._live_vectors(missing)
            self._ix.add(keys, matrix)
        return len(missing), len(extra)

    def _scrub_free_slots(self) -> None:
        """Overwrite the vectors of removed entries, which usearch keeps in free slots.

        usearch reuses a free slot for the next vector added: fill every free
        slot with a placeholder, then remove the placeholders again. If the
        slots were not reused (a usearch change), rebuild the graph instead.
        """
        nodes = self._ix.stats.nodes
        free = nodes - len(self._ix)
        if free <= 0:
            return
        if free > max(1000, nodes // 10):  # cheaper to rebuild than to fill
            self.rebuild()
            return
        keys = np.arange(_SCRUB_BASE_KEY, _SCRUB_BASE_KEY + free, dtype=np.uint64)
        placeholder = np.full((free, self.dim), self.dim ** -0.5, dtype=np.float32)
        self._ix.add(keys, placeholder)
        reused = self._ix.stats.nodes == nodes
        self._ix.remove(keys)
        if not reused:
            self.rebuild()

    def _fresh_index(self) -> Any:
        Index, _ = _usearch()
        return Index(ndim=self.dim, metric="cos", dtype="f32")

    def _live_vectors(self, keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if keys is None:
            rows = self._db.execute("SELECT key, vector FROM memories WHERE forgotten = 0").fetchall()
        else:
            rows = [row for part in _batches([int(k) for k in keys]) for row in self._db.execute(
                f"SELECT key, vector FROM memories WHERE forgotten = 0 AND key IN ({_marks(part)})", part)]
        out_keys = np.array([r[0] for r in rows], dtype=np.uint64)
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return out_keys, matrix

    def _records_by_key(self, keys: builtins.list[int]) -> dict[int, MemoryRecord]:
        if not keys:
            return {}
        rows = self._db.execute(f"SELECT key, {_COLUMNS} FROM memories WHERE key IN ({_marks(keys)})",
                                keys).fetchall()
        return {row[0]: _record(row[1:]) for row in rows}

    def _select(self, clause: str, params: tuple) -> builtins.list[MemoryRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM memories {clause}", params).fetchall()
        return [_record(row) for row in rows]

    def _check_vectors(self, vectors: np.ndarray | None, count: int) -> np.ndarray:
        if count == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if vectors is None:
            raise ValueError(f"{count} records need {count} vectors")
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if matrix.shape != (count, self.dim):
            raise ValueError(f"vectors must have shape ({count}, {self.dim}), not {matrix.shape}")
        if not np.isfinite(matrix).all() or not (np.linalg.norm(matrix, axis=1) > 0).all():
            raise ValueError("vectors must be finite and non-zero")
        return matrix

    def _exists(self, memory_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM memories WHERE memory_id = ?", (memory_id,)).fetchone() is not None

    def _exists_live(self, memory_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM memories WHERE memory_id = ? AND forgotten = 0",
                                (memory_id,)).fetchone() is not None

    def _write_meta(self, values: dict[str, str]) -> None:
        self._db.executemany("INSERT INTO meta (key, value) VALUES (?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                             [(k, str(v)) for k, v in values.items()])

    def _set_many(self, values: dict[str, str]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._write_meta(values)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _scalar(self, sql: str) -> int:
        return int(self._db.execute(sql).fetchone()[0])


def _batches(items: list, size: int = 500) -> list[list]:
    """Pieces small enough for SQLite's bound-parameter limit."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def _marks(items: list) -> str:
    return ",".join("?" * len(items))


def _record(row: tuple) -> MemoryRecord:
    memory_id, seq, chunk, session_id, ts, route, tags, text, sha, forgotten = row
    return MemoryRecord(memory_id=memory_id, seq=seq, chunk=chunk, session_id=session_id, ts=ts,
                        route=route, tags=json.loads(tags), text=text, text_sha256=sha,
                        forgotten=bool(forgotten))
