"""What ingest answers on ``ingest.ctl``: the request policy, apart from the sockets.

:class:`services.ingest.proc.IngestServer` is the shell (sockets, the consumer
thread, the inbox watcher) and hands each decoded request to :func:`answer`
through the shared RouterServer; anything with the attributes of
:class:`IngestHost` can be driven the same way in process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from protocol.envelope import Envelope
from protocol.ingest_api import (
    CompactMemories,
    EditMemory,
    Forget,
    GetMemory,
    GetMemoryStats,
    ImportFile,
    ImportResult,
    ListMemories,
    ListTrainable,
    MemoryDetail,
    MemoryList,
    MemoryStats,
    Recall,
    Recalled,
)
from protocol.service_api import ErrorReply, Ping
from services.common.config import Config
from services.common.daemon import Readiness
from services.common.paths import Paths


class IngestHost(Protocol):
    """What answering needs of the daemon: its state now (``core`` is None until an index is open)."""

    paths: Paths
    readiness: Readiness
    core: Any
    problem: str
    consumer: Any
    log_client: Any
    config: Config
    emit: Callable[[Envelope], int]
    append_many: Callable[[list[Envelope]], list[int]]


def answer(host: IngestHost, request: Any) -> Any:
    """The reply to one request on ``ingest.ctl`` (RouterServer turns an exception into an ErrorReply)."""
    from services.ingest import forget

    match request:
        case Ping(request_id=rid):
            if host.core is not None:
                host.readiness.details["cursor_seq"] = str(host.core.cursor)
            return host.readiness.pong(rid)
        case ImportFile(path=path, request_id=rid):  # only appends to the log: works without an embedder
            from services.ingest.importer import import_file

            source = Path(path)
            if not source.is_file():
                return ErrorReply(code="bad_request", request_id=rid,
                                  message=f"{path} is not a readable file")
            result = import_file(source, host.paths, host.append_many, move=False,
                                 redact=host.config.chat.redact_before_log)
            if result.error:
                return ErrorReply(code="bad_request", request_id=rid, message=result.error)
            return ImportResult(request_id=rid, file=result.file, turns=result.turns,
                                first_seq=result.first_seq, last_seq=result.last_seq)
    if host.core is None:
        return ErrorReply(code="unavailable", request_id=getattr(request, "request_id", ""),
                          message=f"ingest is not ready: {host.problem or 'still starting; try again shortly'}")
    match request:
        case Recall(query=query, k=k, min_score=min_score, request_id=rid):
            if not query.strip():
                return ErrorReply(code="bad_request", request_id=rid, message="recall needs a non-empty query")
            memories, embed_ms, search_ms = host.core.recall(query, k, min_score)
            return Recalled(request_id=rid, memories=memories, embed_ms=round(embed_ms, 3),
                            search_ms=round(search_ms, 3))
        case ListMemories(limit=limit, offset=offset, request_id=rid):
            infos, total = forget.list_memories(host.core, max(1, min(limit, 500)), max(0, offset))
            return MemoryList(request_id=rid, memories=infos, total=total)
        case GetMemory(memory_id=mid, request_id=rid):
            info = forget.get_memory(host.core, mid)
            if info is None:
                return ErrorReply(code="bad_request", request_id=rid,
                                  message=f"no memory {mid!r}; list them with `circ memory list`")
            return MemoryDetail(request_id=rid, memory=info)
        case GetMemoryStats(request_id=rid):
            head = host.consumer.head_seq if host.consumer is not None else 0
            return MemoryStats(request_id=rid, head_seq=head, **forget.memory_stats(host.core))
        case Forget() as req:
            return forget.forget(host.core, req, host.emit, host.log_client)
        case EditMemory() as req:
            from services.ingest.edit import edit

            return edit(host.core, req, host.emit)
        case ListTrainable() as req:
            from services.ingest.trainable import answer_trainable

            return answer_trainable(host.core, req)
        case CompactMemories() as req:
            from services.ingest.compact import compact

            return compact(host.core, req, host.emit)
    return ErrorReply(code="bad_request", message=f"unsupported request {type(request).__name__}")

