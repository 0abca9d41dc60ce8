"""Acknowledged appends to the event log, safe to retry.

A producer that must not lose an event (chat's finished turns) appends over
the eventlog's ROUTER and waits for the commit. If the eventlog is down or
restarting it retries with the same ``msg_id`` until ``retry_s`` runs out;
the log stores an event once however many times it is sent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import zmq

from protocol.envelope import Envelope, new_id
from protocol.eventlog_api import Append, Appended, EventlogReply, Replay, ReplayBatch
from services.common.logging import get_logger
from services.common.paths import Paths
from services.common.rpc import RemoteError, RpcClient, ServiceUnavailable

log = get_logger(__name__)


class EventlogClient:
    def __init__(self, paths: Paths, *, timeout_s: float = 5.0, ctx: zmq.Context | None = None) -> None:
        self._rpc = RpcClient(paths, "eventlog", "events.ctl", EventlogReply, timeout_s=timeout_s, ctx=ctx)

    def close(self) -> None:
        self._rpc.close()

    def append(self, events: Sequence[Envelope], *, retry_s: float = 0.0,
               should_stop=lambda: False) -> Appended:
        """Append and wait for the commit; retry for up to ``retry_s`` seconds."""
        deadline = time.monotonic() + retry_s
        delay_s = 0.05
        while True:
            try:
                return self._rpc.request(Append(events=list(events), request_id=new_id("a")))
            except (ServiceUnavailable, RemoteError) as exc:
                if isinstance(exc, RemoteError) and exc.code not in ("unavailable", "internal"):
                    raise  # the log refused these events: retrying cannot help
                if time.monotonic() >= deadline or should_stop():
                    raise
                log.warning("eventlog.append_retry", error=str(exc), retry_in_s=delay_s)
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 1.0)

    def replay(self, after_seq: int, *, limit: int = 1000, types: Sequence[str] = ()) -> ReplayBatch:
        return self._rpc.request(Replay(after_seq=after_seq, limit=limit, types=list(types),
                                        request_id=new_id("q")))
