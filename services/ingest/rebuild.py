"""Rebuild the memory index from the event log (the index is derived state).

Replays ``chat.turn_completed`` and ``memory.forgotten`` in seq order through
the same :class:`IngestCore` the daemon uses, without logging decisions again
(they are already in the log). Reads the log through a read-only SQLite
connection, so it needs no daemon.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from protocol.codec import Codec, ProtocolError, encode
from protocol.envelope import Envelope
from protocol.events import ChatTurnCompleted, MemoryForgotten, event_tag
from services.common.paths import Paths
from services.eventlog.store import connect, replay

TYPES = [event_tag(ChatTurnCompleted), event_tag(MemoryForgotten)]
PAGE = 2000


def rebuild_index(paths: Paths, target: Path, *, embedder=None,  # noqa: ANN001
                  progress: Callable[[int, int], None] | None = None) -> int:
    """Build a fresh index in ``target`` from the log; return events handled."""
    from services.ingest.core import IngestCore
    from services.ingest.embed import Embedder
    from services.ingest.forget import apply_forgotten
    from services.ingest.index import MemoryIndex

    if target.exists():
        shutil.rmtree(target)
    from services.ingest.proc import load_router

    index = MemoryIndex(target)
    embedder = embedder or Embedder()
    # The same router as the daemon, so a rebuild decides every turn the same way.
    core = IngestCore(index, embedder, router=load_router(embedder))
    codec: Codec[Envelope] = Codec(Envelope)
    conn = connect(paths.events_db, readonly=True)
    handled, after = 0, 0
    try:
        head = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        while True:
            events, _ = replay(conn, after, PAGE, TYPES)
            if not events:
                break
            for stored in events:
                after = stored.seq or after
                try:
                    env = codec.decode(encode(stored))
                except ProtocolError:
                    continue
                if isinstance(env.body, MemoryForgotten):
                    apply_forgotten(core, env.body)
                else:
                    core.handle(env, lambda _e: None)
                handled += 1
            if progress:
                progress(after, head)
        index.set_meta("cursor_seq", str(max(after, core.cursor)))
        index.save()
    finally:
        conn.close()
        index.close()
    return handled


def swap_in(paths: Paths, rebuilt: Path) -> None:
    """Replace data/memory with the rebuilt directory (ingest must be stopped)."""
    live = paths.memory
    old = live.with_name(f"memory.old-{int(time.time())}")
    if live.exists():
        live.rename(old)
    rebuilt.rename(live)
    if old.exists():
        shutil.rmtree(old)
