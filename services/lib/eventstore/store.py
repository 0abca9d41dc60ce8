"""The append-only event store: SQLite in WAL mode, one writer.

Why SQLite: atomic commit that is among the most tested code there is, in the
standard library, and queryable for audits. Guarantees:

- ``seq`` is the INTEGER PRIMARY KEY, assigned here as head+1 inside the write
  transaction; no AUTOINCREMENT (with INSERT OR IGNORE it burns numbers, and
  then a gap no longer means a loss). Rows are never deleted, so seq is
  gap-free.
- ``event_id`` is UNIQUE: re-appending an event returns its existing seq.
- ``synchronous=FULL`` (+ ``fullfsync`` on macOS): a committed append
  survives power loss. Many appends share one transaction (group commit).
- Triggers refuse UPDATE and DELETE.
- Optional hash chain: each row's ``hash`` covers the previous row's hash and
  the row's content (through ``body_sha256``), so ``verify`` can show the
  history was not edited.
"""

from __future__ import annotations

import errno
import hashlib
import shutil
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from protocol.codec import encode
from protocol.envelope import Envelope, StoredEnvelope
from protocol.events import ChatTurnCompleted, MemoryForgotten
from services.common.hostinfo import sqlite_durability_pragmas

_turn_decoder = msgspec.msgpack.Decoder(ChatTurnCompleted)
_forgotten_decoder = msgspec.msgpack.Decoder(MemoryForgotten)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    ts REAL NOT NULL,
    source TEXT NOT NULL,
    type TEXT NOT NULL,
    parent_id TEXT,
    v INTEGER NOT NULL,
    body BLOB NOT NULL,
    body_sha256 TEXT NOT NULL,
    hash TEXT
);
CREATE INDEX IF NOT EXISTS events_type_seq ON events(type, seq);
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- The one audited exception to append-only: erasing a forgotten turn's text.
-- A row here (written in the same transaction as the memory.forgotten event
-- that asked for it) is what permits rewriting that one row's body.
CREATE TABLE IF NOT EXISTS erasures (
    seq INTEGER PRIMARY KEY REFERENCES events(seq),
    erased_by TEXT NOT NULL,
    erased_at REAL NOT NULL
);
CREATE TRIGGER IF NOT EXISTS erasures_no_update BEFORE UPDATE ON erasures
BEGIN SELECT RAISE(ABORT, 'erasures are append-only'); END;
CREATE TRIGGER IF NOT EXISTS erasures_no_delete BEFORE DELETE ON erasures
BEGIN SELECT RAISE(ABORT, 'erasures are append-only'); END;
DROP TRIGGER IF EXISTS events_no_update;
CREATE TRIGGER IF NOT EXISTS events_update_only_erasure BEFORE UPDATE ON events
WHEN NOT EXISTS (SELECT 1 FROM erasures WHERE seq = OLD.seq)
    OR NEW.seq IS NOT OLD.seq OR NEW.event_id IS NOT OLD.event_id OR NEW.ts IS NOT OLD.ts
    OR NEW.source IS NOT OLD.source OR NEW.type IS NOT OLD.type OR NEW.parent_id IS NOT OLD.parent_id
    OR NEW.v IS NOT OLD.v OR NEW.body_sha256 IS NOT OLD.body_sha256 OR NEW.hash IS NOT OLD.hash
BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END;
"""

# Event types whose text an erasure blanks (the only ones holding what a user said).
ERASABLE_TYPES = ("chat.turn_completed",)

GENESIS_HASH = "0" * 64
# A replay page stops short of this many bytes, well under the 4 MiB frame limit.
MAX_REPLAY_BYTES = 2 * 1024 * 1024


class StoreError(Exception):
    """The store refused an operation (bad envelope, unwritable database)."""


class LogFull(StoreError):
    """A commit failed for want of space (SQLITE_FULL, ENOSPC, EDQUOT); nothing of it was written.

    The transaction is rolled back whole, so every event committed before
    stays; the next append succeeds once there is space again.
    """

    def __init__(self, where: Path, cause: BaseException) -> None:
        self.where = where
        super().__init__(f"disk full: free space under {where} ({cause})")


class LogDamaged(StoreError):
    """``events.db`` fails SQLite's integrity check: a torn or corrupted page."""

    def __init__(self, db_path: Path, problem: str) -> None:
        self.db_path = db_path
        super().__init__(
            f"{db_path} is damaged ({problem}). The eventlog will not write to a damaged log. Stop circadian "
            f"(`circ down`), keep a copy of the file, then put back a backup, or recover what is readable: "
            f"`sqlite3 {db_path} .recover | sqlite3 {db_path}.recovered` and move the result in its place; "
            f"`circ log verify` checks the result")


SQLITE_FULL = 13
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_out_of_space(exc: BaseException) -> bool:
    """Whether a failed write failed for want of space (a full disk or quota, or a size cap)."""
    if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) is not None:
        return exc.sqlite_errorcode & 0xFF == SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in _SPACE_ERRNOS


def _nearly_no_space(where: Path, floor_bytes: int = 1 << 20) -> bool:
    """A write that failed as an I/O error (a WAL index that could not grow) on a full disk."""
    try:
        return shutil.disk_usage(where).free < floor_bytes
    except OSError:
        return False


def integrity_problem(conn: sqlite3.Connection, *, max_errors: int = 5) -> str | None:
    """SQLite's ``quick_check`` of the whole file (every page, O(size)); None when it is sound."""
    try:
        rows = [r[0] for r in conn.execute(f"PRAGMA quick_check({max_errors})").fetchall()]
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        return str(exc)
    return None if rows == ["ok"] else "; ".join(rows)


@dataclass(frozen=True)
class AppendResult:
    seq: int
    duplicate: bool
    stored: StoredEnvelope | None  # None for duplicates (nothing new to publish)


@dataclass
class VerifyReport:
    ok: bool
    count: int
    head_seq: int
    gaps: list[int] = field(default_factory=list)
    bad_bodies: list[int] = field(default_factory=list)
    bad_hashes: list[int] = field(default_factory=list)
    erased: list[int] = field(default_factory=list)  # audited erasures (forget)
    hash_chain: bool = True
    damaged: str | None = None  # what SQLite's integrity check found wrong with the file's pages


def row_hash(prev_hash: str, seq: int, event_id: str, ts: float, source: str, type_: str,
             parent_id: str | None, v: int, body_sha256: str) -> str:
    """The chain hash of one row: covers the previous hash and every column."""
    material = encode([prev_hash, seq, event_id, ts, source, type_, parent_id, v, body_sha256])
    return hashlib.sha256(material).hexdigest()


def connect(db_path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the log; read-only connections are for audits (tail, export, verify)."""
    if readonly:
        uri = f"file:{db_path}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    else:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # synchronous=FULL, and fullfsync on macOS, where plain fsync does not reach the disk.
        for pragma in sqlite_durability_pragmas():
            conn.execute(pragma)
        # Erased text must not linger in free pages.
        conn.execute("PRAGMA secure_delete=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class EventStore:
    """Socket-free core of the eventlog daemon."""

    def __init__(self, db_path: Path, *, hash_chain: bool = True, check: bool = False) -> None:
        """Open (or create) the log. ``check``: run SQLite's integrity check first and raise
        :class:`LogDamaged` if it fails (the daemon does, at every start)."""
        self.db_path = db_path
        self.hash_chain = hash_chain
        self._conn = connect(db_path)
        if check:
            problem = integrity_problem(self._conn)
            if problem is not None:
                self._conn.close()
                raise LogDamaged(db_path, problem)
        self._conn.executescript(SCHEMA)
        self._head_seq, self._head_hash = self._read_head()

    def close(self) -> None:
        self._conn.close()

    @property
    def head_seq(self) -> int:
        return self._head_seq

    def _read_head(self) -> tuple[int, str]:
        row = self._conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return 0, GENESIS_HASH
        return row[0], row[1] or GENESIS_HASH

    def append_batch(self, envelopes: Sequence[Envelope]) -> list[AppendResult]:
        """Commit ``envelopes`` in order, in ONE transaction (one fsync).

        Either all new events are committed or none (on error the head is
        rolled back). Duplicates — by event id, within the log or the batch —
        return the existing seq.
        """
        results: list[AppendResult] = []
        head_seq, head_hash = self._head_seq, self._head_hash
        cur = self._conn.cursor()
        erased = 0
        cur.execute("BEGIN IMMEDIATE")
        try:
            seen: dict[str, int] = {}
            for env in envelopes:
                if env.seq is not None:
                    raise StoreError(f"event {env.msg_id} already carries seq {env.seq}: only the eventlog assigns seq")
                existing = seen.get(env.msg_id)
                if existing is None:
                    row = cur.execute("SELECT seq FROM events WHERE event_id = ?", (env.msg_id,)).fetchone()
                    existing = row[0] if row else None
                if existing is not None:
                    results.append(AppendResult(existing, True, None))
                    continue
                head_seq += 1
                body = encode(env.body)
                body_sha = hashlib.sha256(body).hexdigest()
                chained = (
                    row_hash(head_hash, head_seq, env.msg_id, env.ts, env.source, env.type,
                             env.parent_id, env.v, body_sha)
                    if self.hash_chain else None
                )
                cur.execute(
                    "INSERT INTO events (seq, event_id, ts, source, type, parent_id, v, body, body_sha256, hash)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (head_seq, env.msg_id, env.ts, env.source, env.type, env.parent_id, env.v,
                     body, body_sha, chained),
                )
                head_hash = chained or head_hash
                seen[env.msg_id] = head_seq
                if isinstance(env.body, MemoryForgotten):
                    erased += erase_turns(cur, env.body.turn_seqs, env.msg_id, env.ts)
                stored = StoredEnvelope(msg_id=env.msg_id, ts=env.ts, source=env.source,
                                        body=msgspec.Raw(body), parent_id=env.parent_id,
                                        seq=head_seq, v=env.v)
                results.append(AppendResult(head_seq, False, stored))
            cur.execute("COMMIT")
        except BaseException as exc:
            # SQLite may have rolled back already (it does on SQLITE_FULL): a second ROLLBACK would
            # raise "no transaction is active" and hide the real cause.
            if self._conn.in_transaction:
                cur.execute("ROLLBACK")
            if is_out_of_space(exc) or (isinstance(exc, sqlite3.OperationalError | OSError)
                                        and _nearly_no_space(self.db_path.parent)):
                raise LogFull(self.db_path.parent, exc) from exc
            raise
        self._head_seq, self._head_hash = head_seq, head_hash
        if erased:
            # Move the rewritten pages out of the WAL so the old text is gone from disk.
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return results

    def replay(self, after_seq: int, limit: int, types: Iterable[str] = ()) -> tuple[list[StoredEnvelope], int]:
        """Events with seq > after_seq (oldest first), and the head seq, read consistently."""
        return replay(self._conn, after_seq, limit, types)


def erase_turns(cur: sqlite3.Cursor, seqs: Iterable[int], by_event_id: str, at: float) -> int:
    """Blank the text of the chat turns ``seqs`` (the audited exception to append-only).

    The body becomes a tombstone of the same type (texts empty, ``erased``
    set), so every consumer still decodes it; ``body_sha256`` and the chain
    hash keep the original's values, and ``erasures`` records who asked.
    Returns how many rows were erased now (already-erased rows are skipped).
    """
    count = 0
    for seq in sorted(set(seqs)):
        row = cur.execute("SELECT type, body FROM events WHERE seq = ?", (seq,)).fetchone()
        if row is None or row[0] not in ERASABLE_TYPES:
            continue
        if cur.execute("SELECT 1 FROM erasures WHERE seq = ?", (seq,)).fetchone():
            continue
        try:
            turn = _turn_decoder.decode(row[1])
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            continue
        tombstone = msgspec.structs.replace(turn, user_text="", assistant_text="", system_prompt=None, erased=True)
        cur.execute("INSERT INTO erasures (seq, erased_by, erased_at) VALUES (?, ?, ?)", (seq, by_event_id, at))
        cur.execute("UPDATE events SET body = ? WHERE seq = ?", (encode(tombstone), seq))
        count += 1
    return count


def replay(conn: sqlite3.Connection, after_seq: int, limit: int,
           types: Iterable[str] = ()) -> tuple[list[StoredEnvelope], int]:
    """Replay from any connection (the daemon's, or a read-only audit one)."""
    types = list(types)
    sql = "SELECT seq, event_id, ts, source, parent_id, v, body FROM events WHERE seq > ?"
    params: list[object] = [after_seq]
    if types:
        sql += f" AND type IN ({','.join('?' * len(types))})"
        params.extend(types)
    sql += " ORDER BY seq LIMIT ?"
    params.append(limit)
    conn.execute("BEGIN")  # one snapshot for the rows and the head
    try:
        rows = conn.execute(sql, params).fetchall()
        head = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    finally:
        conn.execute("COMMIT")
    events = []
    size = 0
    for r in rows:
        size += len(r[6]) + 128
        if events and size > MAX_REPLAY_BYTES:
            break  # the caller sees fewer events than it asked for, and asks again
        events.append(StoredEnvelope(msg_id=r[1], ts=r[2], source=r[3], parent_id=r[4], v=r[5],
                                     body=msgspec.Raw(r[6]), seq=r[0]))
    return events, head


def stats(conn: sqlite3.Connection, db_path: Path) -> dict[str, object]:
    by_type = dict(conn.execute("SELECT type, COUNT(*) FROM events GROUP BY type ORDER BY type").fetchall())
    count, head, first_ts, last_ts = conn.execute(
        "SELECT COUNT(*), COALESCE(MAX(seq), 0), MIN(ts), MAX(ts) FROM events"
    ).fetchone()
    size = sum(p.stat().st_size for p in db_path.parent.glob(db_path.name + "*") if p.is_file())
    return {"count": count, "head_seq": head, "by_type": by_type, "db_bytes": size,
            "first_ts": first_ts, "last_ts": last_ts}


def _authorised_erasures(conn: sqlite3.Connection) -> set[int]:
    """Seqs whose erasure a logged ``memory.forgotten`` event asked for.

    An ``erasures`` row alone proves nothing (anyone with the file could add
    one); it counts only if the forgetting event it names is in the log and
    lists that seq. The event itself is covered by the hash chain.
    """
    try:
        rows = conn.execute(
            "SELECT erasures.seq, events.body FROM erasures JOIN events ON events.event_id = erasures.erased_by"
            " WHERE events.type = 'memory.forgotten'").fetchall()
    except sqlite3.OperationalError:  # a log from before erasures existed
        return set()
    allowed: set[int] = set()
    for seq, body in rows:
        try:
            event = _forgotten_decoder.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            continue
        if seq in event.turn_seqs:
            allowed.add(seq)
    return allowed


def _is_tombstone(body: bytes) -> bool:
    try:
        turn = _turn_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False
    return turn.erased and not turn.user_text and not turn.assistant_text


def verify(conn: sqlite3.Connection) -> VerifyReport:
    """Check the file's pages (SQLite's quick_check), gap-free seq, body checksums and (if
    present) the hash chain. A damaged file is reported in ``damaged``, never raised."""
    problem = integrity_problem(conn)
    try:
        report = _verify_rows(conn)
    except sqlite3.DatabaseError as exc:  # a page too damaged to read the rows past it
        report = VerifyReport(ok=False, count=0, head_seq=0)
        problem = problem or str(exc)
    if problem is not None:
        report.damaged = problem
        report.ok = False
    return report


def _verify_rows(conn: sqlite3.Connection) -> VerifyReport:
    report = VerifyReport(ok=True, count=0, head_seq=0)
    expected_seq = 1
    prev_hash = GENESIS_HASH
    chain_seen = False
    erased = _authorised_erasures(conn)
    rows = conn.execute(
        "SELECT seq, event_id, ts, source, type, parent_id, v, body, body_sha256, hash FROM events ORDER BY seq"
    )
    for seq, event_id, ts, source, type_, parent_id, v, body, body_sha, chained in rows:
        report.count += 1
        report.head_seq = seq
        if seq != expected_seq:
            report.gaps.append(expected_seq)
        expected_seq = seq + 1
        if seq in erased and _is_tombstone(body):
            # An audited erasure: a memory.forgotten event (covered by the
            # chain) asked for it, and the body is only a tombstone.
            report.erased.append(seq)
        elif hashlib.sha256(body).hexdigest() != body_sha:
            report.bad_bodies.append(seq)
        if chained is not None:
            chain_seen = True
            if row_hash(prev_hash, seq, event_id, ts, source, type_, parent_id, v, body_sha) != chained:
                report.bad_hashes.append(seq)
            prev_hash = chained
    report.hash_chain = chain_seen
    report.ok = not (report.gaps or report.bad_bodies or report.bad_hashes)
    return report
