"""Reading what ingest remembered, read-only, for the night's dataset.

The memory index's SQLite file belongs to ingest; the trainer only reads it
(WAL lets it read while ingest writes), so the two daemons never contend for
a write lock, and a sleep never changes what is remembered.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from services.lib.memory.index import MemoryRecord

DB_NAME = "memories.db"


def open_readonly(memory_dir: Path) -> sqlite3.Connection | None:
    path = memory_dir / DB_NAME
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def trainable_memories(memory_dir: Path, *, after_seq: int = 0) -> list[MemoryRecord]:
    """Memories routed to training (lora/both), not forgotten, not #no-train, newer than ``after_seq``."""
    conn = open_readonly(memory_dir)
    if conn is None:
        return []
    try:
        # A memory a later correction superseded (services/ingest/supersede.py) is never trained
        # on: its value is the old one. (An index from before issue 12 has no such table.)
        has_superseded = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'superseded'").fetchone() is not None
        rows = conn.execute(
            "SELECT memory_id, seq, chunk, session_id, ts, route, tags, text, text_sha256 FROM memories"
            " WHERE forgotten = 0 AND route IN ('lora', 'both') AND seq > ?"
            + (" AND memory_id NOT IN (SELECT memory_id FROM superseded)" if has_superseded else "")
            + " ORDER BY seq, chunk",
            (after_seq,)).fetchall()
    finally:
        conn.close()
    records = []
    for memory_id, seq, chunk, session_id, ts, route, tags, text, sha in rows:
        tag_list = json.loads(tags) if tags else []
        if "no-train" in tag_list:
            continue
        records.append(MemoryRecord(memory_id=memory_id, seq=seq, chunk=chunk, session_id=session_id or "",
                                    ts=ts or 0.0, route=route, tags=tag_list, text=text or "",
                                    text_sha256=sha or ""))
    return records


def forgotten_ids(memory_dir: Path) -> set[str]:
    conn = open_readonly(memory_dir)
    if conn is None:
        return set()
    try:
        return {r[0] for r in conn.execute("SELECT memory_id FROM memories WHERE forgotten = 1")}
    finally:
        conn.close()
