"""`circ memory edit ID`: replace a memory's text (issue 12, part 6).

The request is logged first as ``memory.edited`` (new text and the text it
replaces, so the log keeps the old wording), then applied: the new text is
redacted by the installation's policy, re-embedded, and the memory's single-
valued facts are dropped (an edited memory no longer takes part in
supersession; its text is what the user wrote). Applying is idempotent, so the
consumer's replay of the event and a rebuild from the log give the same index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from protocol.envelope import Envelope, new_envelope
from protocol.events import MemoryEdited
from protocol.ingest_api import EditMemory, MemoryDetail

MAX_EDIT_CHARS = 8_000


def edit(core: Any, request: EditMemory, emit: Callable[[Envelope], int]) -> Any:
    from protocol.service_api import ErrorReply
    from services.ingest.core import memory_info

    text = request.text.strip()
    if not text:
        return ErrorReply(code="bad_request", request_id=request.request_id,
                          message="the new text is empty; to remove a memory use `circ forget ID`")
    if len(text) > MAX_EDIT_CHARS:
        return ErrorReply(code="too_large", request_id=request.request_id,
                          message=f"the new text has {len(text)} characters; the limit is {MAX_EDIT_CHARS}")
    record = core.index.get(request.memory_id)
    if record is None:
        return ErrorReply(code="bad_request", request_id=request.request_id,
                          message=f"no memory {request.memory_id!r}; list them with `circ memory list`")
    emit(new_envelope(MemoryEdited(memory_id=record.memory_id, text=text, previous_text=record.text),
                      source="ingest"))
    apply_edited(core, MemoryEdited(memory_id=record.memory_id, text=text))
    return MemoryDetail(request_id=request.request_id, memory=memory_info(core.index.get(record.memory_id)))


def apply_edited(core: Any, event: MemoryEdited) -> bool:
    """Put the edit into the index (redacted, re-embedded); False when the memory is gone."""
    from services.lib.privacy.redact import redact

    text = redact(event.text, names=core.redact_names).text
    record = core.index.get(event.memory_id)
    if record is None:
        return False
    if record.text == text:
        return True  # already applied (replay)
    from services.ingest.chunks import expanded

    return core.index.replace_text(event.memory_id, text, core.embedder.embed([expanded(text)])[0])
