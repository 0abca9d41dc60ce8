"""chat's side of memory recall: ask ingest, within a latency budget.

Runs on chat's model thread with its own DEALER. If ingest is down or slower
than ``recall_timeout_ms``, the turn is answered without memories and the
turn record says why (``recall_status``); a late reply is discarded by
request id.
"""

from __future__ import annotations

import time

import zmq

from protocol.envelope import new_id
from protocol.ingest_api import IngestReply, Recall, Recalled
from services.chat.engine import RecallOutcome
from services.common.config import ChatConfig
from services.common.logging import get_logger
from services.common.paths import Paths
from services.common.rpc import RemoteError, RpcClient, ServiceUnavailable

log = get_logger("chat.recall")


class IngestRecaller:
    def __init__(self, paths: Paths, config: ChatConfig, ctx: zmq.Context) -> None:
        self.config = config
        self._rpc = RpcClient(paths, "ingest", "ingest.ctl", IngestReply,
                              timeout_s=config.recall_timeout_ms / 1000, ctx=ctx)

    def __call__(self, query: str) -> RecallOutcome:
        started = time.perf_counter()
        request = Recall(query=query, k=self.config.recall_k, min_score=self.config.recall_min_score,
                         request_id=new_id("q"))
        try:
            reply = self._rpc.request(request)
        except ServiceUnavailable as exc:
            status = "timeout" if "no reply within" in str(exc) else "unavailable"
            log.info("chat.recall_skipped", status=status, error=str(exc))
            return RecallOutcome(status, [], (time.perf_counter() - started) * 1000)
        except RemoteError as exc:
            log.warning("chat.recall_failed", error=str(exc))
            return RecallOutcome("error", [], (time.perf_counter() - started) * 1000)
        if not isinstance(reply, Recalled):
            return RecallOutcome("error", [], (time.perf_counter() - started) * 1000)
        memories = [(m.memory_id, m.text) for m in reply.memories]
        return RecallOutcome("ok", memories, (time.perf_counter() - started) * 1000)
