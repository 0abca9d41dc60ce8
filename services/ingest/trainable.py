"""Answer the trainer's ``ListTrainable``: the memories a night may train on.

The memory index belongs to ingest, so the trainer asks for it over the
socket instead of reading ``memories.db`` (issue 11: services meet only
through messages). What counts as trainable is the index's rule
(:meth:`services.lib.memory.index.MemoryIndex.trainable`).
"""

from __future__ import annotations

from typing import Any

from protocol.ingest_api import MAX_TRAINABLE_PAGE, ListTrainable, TrainableList, TrainableMemory
from protocol.service_api import ErrorReply


def answer_trainable(core: Any, request: ListTrainable) -> TrainableList | ErrorReply:
    rid = request.request_id
    if request.after_seq < 0 or request.after_chunk < -1:
        return ErrorReply(code="bad_request", request_id=rid,
                          message="after_seq must be >= 0 and after_chunk >= -1 (the last memory of the previous page)")
    if not 1 <= request.limit <= MAX_TRAINABLE_PAGE:
        return ErrorReply(code="bad_request", request_id=rid,
                          message=f"limit must be 1..{MAX_TRAINABLE_PAGE}; page with after_seq/after_chunk")
    index = core.index
    total = index.count_trainable(request.after_seq)
    forgotten = sorted(index.forgotten_ids()) if request.with_forgotten else []
    if request.count_only:
        return TrainableList(request_id=rid, total=total, forgotten_ids=forgotten, cursor_seq=core.cursor)
    # One more than asked tells whether another page follows.
    records = index.trainable(request.after_seq, request.after_chunk, request.limit + 1)
    page = [TrainableMemory(memory_id=r.memory_id, seq=r.seq, chunk=r.chunk, session_id=r.session_id, ts=r.ts,
                            route=r.route, tags=list(r.tags), text=r.text, text_sha256=r.text_sha256)
            for r in records[:request.limit]]
    return TrainableList(request_id=rid, memories=page, more=len(records) > request.limit, total=total,
                         forgotten_ids=forgotten, cursor_seq=core.cursor)
