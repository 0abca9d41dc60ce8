"""Inspecting and forgetting memories (the `circ memory` and `circ forget` verbs).

Forgetting is an event first: ingest logs ``memory.forgotten`` naming every
memory of the affected turns and the turns' seqs. The eventlog, in the same
transaction, erases those turns' text (an audited tombstone). ingest then
drops the memories from the index — and does so again, idempotently, when the
event comes back through its consumer, so a crash between the two steps
still ends with the memory gone everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from protocol.envelope import Envelope, new_envelope
from protocol.events import MemoryForgotten
from protocol.ingest_api import Forget, ForgetResult, MemoryInfo
from services.ingest.core import memory_info

MAX_FORGET = 1000


class ForgetError(ValueError):
    pass


def _info(core: Any, record: Any, superseded: dict[str, str]) -> MemoryInfo:
    from services.ingest.compact import merged_into

    by = superseded.get(record.memory_id, "")
    return memory_info(record, superseded_by=by, merged_into=merged_into(core.index, by, record))


def list_memories(core: Any, limit: int, offset: int) -> tuple[list[MemoryInfo], int]:
    records = core.index.list(limit=limit, offset=offset)
    superseded = core.index.superseded()
    return [_info(core, r, superseded) for r in records], int(core.index.stats().get("memories", 0))


def get_memory(core: Any, memory_id: str) -> MemoryInfo | None:
    record = core.index.get(memory_id)
    return None if record is None else _info(core, record, core.index.superseded())


def memory_stats(core: Any) -> dict[str, Any]:
    stats = core.index.stats()
    return {"memories": int(stats.get("memories", 0)), "forgotten": int(stats.get("forgotten", 0)),
            "by_route": dict(stats.get("by_route", {})), "cursor_seq": core.cursor,
            "index_bytes": int(stats.get("bytes", 0))}


def select(core: Any, memory_ids: list[str], match: str) -> list[Any]:
    """The memories a Forget request names, expanded to whole turns."""
    chosen: dict[str, Any] = {}
    for mid in memory_ids:
        record = core.index.get(mid)
        if record is None:
            raise ForgetError(f"no memory {mid!r}; list them with `circ memory list`")
        chosen[mid] = record
    if match.strip():
        for record in core.index.find_text(match.strip(), limit=MAX_FORGET + 1):
            chosen[record.memory_id] = record
    # A turn is forgotten whole: its other chunks go too.
    for seq in {r.seq for r in chosen.values()}:
        for record in core.index.by_seq(seq):
            chosen[record.memory_id] = record
    # So do the near duplicates `circ memory compact` merged into a forgotten memory (with their turns).
    # (Not the memories a forgotten one corrected: those were superseded by a newer memory.)
    from services.ingest.compact import merged_into

    candidates = [(core.index.get(mid), by) for mid, by in core.index.superseded().items()
                  if by in chosen and mid not in chosen]
    for seq in {r.seq for r, by in candidates if r is not None and merged_into(core.index, by, r)}:
        for record in core.index.by_seq(seq):
            chosen[record.memory_id] = record
    if len(chosen) > MAX_FORGET:
        raise ForgetError(f"that matches more than {MAX_FORGET} memories; use a more specific --match")
    return sorted(chosen.values(), key=lambda r: (r.seq, r.chunk))


def related_turns(log: Any, memory_ids: set[str], match: str) -> set[int]:
    """Logged turns to erase beyond the memories' own: their skipped duplicates,
    and (with ``match``) every turn whose user or assistant text contains it."""
    from protocol.events import ChatTurnCompleted, MemorySkipped
    from services.lib.eventstore.replay import client_pager, logged_envelopes

    needle = match.strip().lower()
    seqs: set[int] = set()
    for env in logged_envelopes(client_pager(log), ["chat.turn_completed", "memory.skipped"], page=5000):
        body = env.body
        if isinstance(body, MemorySkipped) and body.duplicate_of in memory_ids:
            seqs.add(body.turn_seq)
        elif (isinstance(body, ChatTurnCompleted) and needle and not body.erased
              and (needle in body.user_text.lower() or needle in body.assistant_text.lower())):
            seqs.add(env.seq or 0)
    return seqs


def forget(core: Any, request: Forget, emit: Callable[[Envelope], int], log: Any = None) -> Any:
    from protocol.service_api import ErrorReply

    if not request.memory_ids and not request.match.strip():
        return ErrorReply(code="bad_request", request_id=request.request_id,
                          message="name memories to forget (ids) or give --match TEXT")
    try:
        records = select(core, list(request.memory_ids), request.match)
    except ForgetError as exc:
        return ErrorReply(code="bad_request", request_id=request.request_id, message=str(exc))
    infos = [memory_info(r) for r in records]
    turn_seqs = {r.seq for r in records}
    if log is not None:
        turn_seqs |= related_turns(log, {r.memory_id for r in records}, request.match)
    if request.dry_run or not turn_seqs:
        return ForgetResult(request_id=request.request_id, memories=infos, dry_run=True,
                            turn_seqs=sorted(turn_seqs))
    event = MemoryForgotten(memory_ids=[r.memory_id for r in records], turn_seqs=sorted(turn_seqs))
    seq = emit(new_envelope(event, source="ingest"))
    apply_forgotten(core, event)
    return ForgetResult(request_id=request.request_id, memories=infos, dry_run=False, event_seq=seq,
                        turn_seqs=sorted(turn_seqs))


def apply_forgotten(core: Any, event: MemoryForgotten) -> int:
    """Drop the named memories (and every memory of the named turns) from the index."""
    ids = set(event.memory_ids)
    for seq in event.turn_seqs:
        ids.update(r.memory_id for r in core.index.by_seq(seq))
    return core.index.forget(sorted(ids)) if ids else 0
