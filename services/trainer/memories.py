"""What ingest remembered, asked of ingest, for the night's dataset.

The memory index belongs to ingest; the trainer asks for the trainable
memories over ``ingest.ctl`` (``protocol.ingest_api.ListTrainable``, paged)
instead of reading ingest's SQLite file, so the two meet only through
messages, and what "trainable" means is decided in one place (the index).
A sleep never changes what is remembered.
"""

from __future__ import annotations

from typing import Any

import msgspec
import zmq

from protocol.ingest_api import IngestReply, ListTrainable, TrainableList
from services.common.paths import Paths
from services.common.rpc import RemoteError, RpcClient, ServiceUnavailable, fresh_request_id
from services.lib.memory.index import MemoryRecord

PAGE = 500
# A page is read from SQLite in milliseconds, but ingest answers between turns it is embedding.
TIMEOUT_S = 30.0


class MemoriesUnavailable(RuntimeError):
    """Ingest could not be asked (not running, or it refused): the night cannot know what to learn."""


class IngestMemories:
    """The trainer's view of the memory index, through ingest (one thread only)."""

    def __init__(self, paths: Paths, *, ctx: zmq.Context | None = None, timeout_s: float = TIMEOUT_S) -> None:
        self._rpc = RpcClient(paths, "ingest", "ingest.ctl", IngestReply, timeout_s=timeout_s, ctx=ctx)

    def close(self) -> None:
        self._rpc.close()

    def __enter__(self) -> IngestMemories:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def _ask(self, **fields: Any) -> TrainableList:
        try:
            reply = self._rpc.request(ListTrainable(request_id=fresh_request_id(), **fields))
        except (ServiceUnavailable, RemoteError) as exc:
            raise MemoriesUnavailable(f"could not ask ingest for the trainable memories: {exc}") from exc
        if not isinstance(reply, TrainableList):
            raise MemoriesUnavailable(f"ingest answered {type(reply).__name__} to list_trainable")
        return reply

    def trainable(self, after_seq: int = 0) -> list[MemoryRecord]:
        """Memories routed to training, not forgotten, not superseded, not #no-train, after ``after_seq``."""
        records: list[MemoryRecord] = []
        cursor = (after_seq, -1)
        while True:
            reply = self._ask(after_seq=cursor[0], after_chunk=cursor[1], limit=PAGE)
            records += [MemoryRecord(**msgspec.structs.asdict(m)) for m in reply.memories]
            if not reply.more or not reply.memories:
                return records
            cursor = (reply.memories[-1].seq, reply.memories[-1].chunk)

    def count_trainable(self, after_seq: int = 0) -> int:
        return self._ask(after_seq=after_seq, count_only=True).total

    def forgotten_ids(self) -> set[str]:
        return set(self._ask(count_only=True, with_forgotten=True).forgotten_ids)
