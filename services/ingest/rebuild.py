"""Rebuild the memory index from the event log (the index is derived state).

Replays ``chat.turn_completed``, ``memory.forgotten``, ``memory.edited`` and
``memory.merged`` in seq order through the same :class:`IngestCore` the daemon uses, without
logging decisions again (they are already in the log). Each turn follows the
decision the daemon *logged* for it (``memory.stored`` with its route,
``memory.skipped``, ``memory.failed``), not a fresh run of the router: an
edit to the router or the fact extractor must not silently change what a
rebuild remembers. Only a turn the daemon never decided (it died first) is
routed afresh. Reads the log through a read-only SQLite connection, so it
needs no daemon.

Two callers: `circ memory rebuild` (ingest stopped, the whole log), and the
ingest daemon itself when the index on disk was built by another embedder
than the one it loaded (up to its cursor; see services.ingest.proc). Both
build beside ``data/memory`` and swap the result in by renaming.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from protocol.events import (
    ChatTurnCompleted,
    MemoryEdited,
    MemoryFailed,
    MemoryForgotten,
    MemoryMerged,
    MemorySkipped,
    MemoryStored,
    event_tag,
)
from services.common.paths import Paths
from services.lib.eventstore.replay import db_pager, logged_envelopes
from services.lib.eventstore.store import connect

TYPES = [event_tag(ChatTurnCompleted), event_tag(MemoryForgotten), event_tag(MemoryEdited), event_tag(MemoryMerged)]
DECISION_TYPES = [event_tag(MemoryStored), event_tag(MemorySkipped), event_tag(MemoryFailed)]
PAGE = 2000


def logged_decisions(conn, head: int) -> dict[int, object]:  # noqa: ANN001 - sqlite3.Connection
    """turn seq -> the decision event ingest logged for it (decisions are deduplicated by msg_id)."""
    return {env.body.turn_seq: env.body for env in logged_envelopes(db_pager(conn), DECISION_TYPES, until_seq=head, page=PAGE)}


def last_decided_seq(paths: Paths) -> int:
    """The newest turn whose decision ingest logged (0 if none): how far a rebuild can follow the log
    without deciding anything itself (read-only, from the file)."""
    try:
        conn = connect(paths.events_db, readonly=True)
    except sqlite3.Error:
        return 0  # no log yet: nothing was decided
    try:
        head = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        return max(logged_decisions(conn, head), default=0)
    finally:
        conn.close()


def replaying_router(decisions: dict[int, object], live_router):  # noqa: ANN001, ANN201
    """A router that answers a turn with its logged route, and routes only undecided turns."""
    from services.ingest.route import RouteDecision

    current: dict[str, int] = {"seq": 0}

    def route(text: str, vector) -> RouteDecision:  # noqa: ANN001
        logged = decisions.get(current["seq"])
        if isinstance(logged, MemoryStored):
            return RouteDecision(route=logged.route, score=logged.score, reason="replayed: " + logged.reason)
        return live_router(text, vector)

    return route, current


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
    # The logged decisions, then the daemon's own router for a turn it never decided; the same
    # name policy (ingest.redact_names), so a rebuild redacts as the daemon does.
    from services.common.config import load_config

    conn = connect(paths.events_db, readonly=True)
    handled, after = 0, 0
    try:
        head = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        if until_seq is not None:
            head = min(head, until_seq)
        # The whole log: the decision for the turn at the cursor is logged after it.
        decisions = logged_decisions(conn, conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
        router, current = replaying_router(decisions, load_router(embedder))
        core = IngestCore(index, embedder, router=router, names=NameKeys.open(paths.keys),
                          redact_names=load_config().ingest.redact_names)
        for env in logged_envelopes(db_pager(conn), TYPES, until_seq=head, page=PAGE):
            after = env.seq or after
            if isinstance(env.body, MemoryForgotten):
                apply_forgotten(core, env.body)
            elif isinstance(env.body, MemoryEdited):
                from services.ingest.edit import apply_edited

                apply_edited(core, env.body)
            elif isinstance(env.body, MemoryMerged):
                from services.ingest.compact import apply_merged

                apply_merged(core, env.body)
            elif isinstance(decisions.get(after), MemorySkipped | MemoryFailed):
                pass  # the daemon remembered nothing of it: neither does the rebuild (nor embeds it)
            else:
                current["seq"] = after
                core.handle(env, lambda _e: None)
            handled += 1
            if on_event:
                on_event(after, head)
            if progress and handled % PAGE == 0:
                progress(after, head)
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
