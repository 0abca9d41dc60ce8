"""Rebuild the memory index from the event log (the index is derived state).

Replays ``chat.turn_completed`` and ``memory.forgotten`` in seq order through
the same :class:`IngestCore` the daemon uses, without logging decisions again
(they are already in the log). Reads the log through a read-only SQLite
connection, so it needs no daemon.

Two callers: `circ memory rebuild` (ingest stopped, the whole log), and the
ingest daemon itself when the index on disk was built by another embedder
than the one it loaded (up to its cursor; see services.ingest.proc). Both
build beside ``data/memory`` and swap the result in by renaming.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from protocol.codec import Codec, ProtocolError, encode
from protocol.envelope import Envelope
from protocol.events import ChatTurnCompleted, MemoryEdited, MemoryForgotten, event_tag
from services.common.paths import Paths
from services.lib.eventstore.store import connect, replay

TYPES = [event_tag(ChatTurnCompleted), event_tag(MemoryForgotten), event_tag(MemoryEdited)]
PAGE = 2000


def rebuild_index(paths: Paths, target: Path, *, embedder=None,  # noqa: ANN001
                  progress: Callable[[int, int], None] | None = None, until_seq: int | None = None,
                  on_event: Callable[[int, int], None] | None = None) -> int:
    """Build a fresh index in ``target`` from the log; return events handled.

    ``embedder``: default, the one the daemon would choose
    (:func:`services.ingest.embed.load_embedder`); the index records it.
    ``until_seq``: replay only up to that seq and leave the cursor there (the
    daemon's own rebuild after an embedder switch: later turns are then
    handled, and their decisions logged, by its consumer); default: the whole
    log. ``progress(seq, head)`` is called after each page, ``on_event(seq,
    head)`` after each event (it may raise to abandon the rebuild).
    """
    from services.ingest.core import IngestCore
    from services.ingest.embed import load_embedder
    from services.ingest.forget import apply_forgotten
    from services.lib.memory.index import MemoryIndex
    from services.lib.privacy.names import NameKeys

    if target.exists():
        shutil.rmtree(target)
    from services.ingest.proc import load_router

    embedder = embedder or load_embedder()
    index = MemoryIndex(target, embedder.dim, embedder=getattr(embedder, "identity", None))
    # The same router as the daemon, so a rebuild decides every turn the same way.
    # ... and the same name policy (ingest.redact_names), so a rebuild redacts as the daemon does.
    from services.common.config import load_config

    core = IngestCore(index, embedder, router=load_router(embedder), names=NameKeys.open(paths.keys),
                      redact_names=load_config().ingest.redact_names)
    codec: Codec[Envelope] = Codec(Envelope)
    conn = connect(paths.events_db, readonly=True)
    handled, after = 0, 0
    try:
        head = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        if until_seq is not None:
            head = min(head, until_seq)
        while after < head:
            events, _ = replay(conn, after, PAGE, TYPES)
            events = [e for e in events if (e.seq or 0) <= head]
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
                elif isinstance(env.body, MemoryEdited):
                    from services.ingest.edit import apply_edited

                    apply_edited(core, env.body)
                else:
                    core.handle(env, lambda _e: None)
                handled += 1
                if on_event:
                    on_event(after, head)
            if progress:
                progress(after, head)
        cursor = until_seq if until_seq is not None else max(after, core.cursor)
        index.set_meta("cursor_seq", str(cursor))
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


def recover_interrupted_swap(paths: Paths) -> str:
    """Undo a swap_in() cut short between its two renames (no data/memory, a memory.old-* beside it).

    Returns what was done ("" if nothing). The restored index is the old one:
    whoever was rebuilding starts again.
    """
    live = paths.memory
    if live.exists():
        return ""
    olds = sorted(live.parent.glob(f"{live.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not olds:
        return ""
    olds[-1].rename(live)
    return f"restored {live} from {olds[-1].name} (a rebuild's swap was interrupted)"
