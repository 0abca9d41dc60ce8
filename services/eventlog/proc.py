"""The eventlog process: owns events.db, binds events.in / events.ctl / events.pub.

One thread, one poll loop. Each round drains every frame already waiting on
PULL and ROUTER (up to ``group_commit_max`` events), commits all appends in
one transaction — one fsync for a whole burst — then acknowledges and
publishes them in seq order, then answers reads (which thus see the appends
of the same round).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import zmq

from protocol.codec import ProtocolError, encode
from protocol.envelope import new_envelope
from protocol.eventlog_api import Append
from protocol.events import ServiceStarted
from protocol.service_api import ErrorReply
from services.common.config import Config
from services.common.daemon import VERSION, Readiness, ShutdownFlag, serve_daemon
from services.common.entry import CONFIG_ERROR_EXIT, CONFIG_ERROR_HOLD_S
from services.common.logging import get_logger
from services.common.paths import Paths
from services.common.router import Incoming, RouterServer, request_context
from services.common.zmqio import bind_pub, bind_pull, bind_router
from services.eventlog.core import EventlogCore, PendingAppend
from services.lib.eventstore.store import EventStore, LogDamaged

log = get_logger("eventlog")

POLL_TIMEOUT_MS = 200


class EventlogServer:
    def __init__(self, paths: Paths, config: Config, ctx: zmq.Context | None = None) -> None:
        self.paths = paths
        self.config = config
        self.ctx = ctx or zmq.Context.instance()
        self.readiness = Readiness("eventlog")
        # check: a torn or corrupted page stops the start (LogDamaged, services.eventlog.proc.run)
        # before anything is appended to a log whose B-tree can no longer be trusted.
        self.store = EventStore(paths.events_db, hash_chain=config.eventlog.hash_chain, check=True)
        self.core = EventlogCore(self.store, self.readiness)
        self.pull = bind_pull(self.ctx, paths.endpoint("events.in"))
        self.router = bind_router(self.ctx, paths.endpoint("events.ctl"))
        self.pub = bind_pub(self.ctx, paths.endpoint("events.pub"))
        # Appends are answered after their group commit (RouterServer.finish), reads after
        # the appends of the same round (handle): the loop below is the eventlog's own.
        self.rpc = RouterServer("eventlog", self.router, self.core.codec, self._answer_read,
                                hint="send a msgpack-encoded request from protocol.eventlog_api",
                                level=logging.DEBUG, context=_append_context, on_reject=self._count_error)

    def close(self) -> None:
        for sock in (self.pull, self.router, self.pub):
            sock.close()
        self.store.close()

    def announce_start(self) -> None:
        env = new_envelope(ServiceStarted(service="eventlog", pid=__import__("os").getpid(),
                                          version=VERSION), source="eventlog")
        self._commit_and_publish([PendingAppend(None, Append(events=[env]))])
        self.readiness.ready = True
        log.info("eventlog.ready", head_seq=self.store.head_seq, db=str(self.paths.events_db))

    def serve(self, stop: ShutdownFlag) -> None:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        while not stop.is_set():
            if not poller.poll(POLL_TIMEOUT_MS):
                continue
            pending, reads = self._drain()
            self._commit_and_publish(pending)
            for incoming in reads:
                self.rpc.send(incoming.origin, self.rpc.handle(incoming))

    def _drain(self) -> tuple[list[PendingAppend], list[Incoming]]:
        pending: list[PendingAppend] = []
        reads: list[Incoming] = []
        budget = self.config.eventlog.group_commit_max
        progressed = True
        while budget > 0 and progressed:
            progressed = False
            try:
                # The whole message: a multi-part one must be dropped as one,
                # not committed part by part.
                frames = self.pull.recv_multipart(zmq.NOBLOCK)
                progressed = True
                budget -= self._take_pull(frames, pending)
            except zmq.Again:
                pass
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
                progressed = True
                budget -= self._take_router(frames, pending, reads)
            except zmq.Again:
                pass
        return pending, reads

    def _take_pull(self, frames: list[bytes], pending: list[PendingAppend]) -> int:
        if len(frames) != 1:
            self._drop("events.in", f"a message of {len(frames)} frames; send exactly one frame per append")
            return 0
        try:
            request = self.core.decode(frames[0])
        except ProtocolError as exc:
            self._drop("events.in", str(exc))
            return 0
        if not isinstance(request, Append) or self.core.validate_append(request):
            self._drop("events.in", f"only valid append requests are accepted, got {type(request).__name__}")
            return 0
        pending.append(PendingAppend(None, request))
        return len(request.events)

    def _take_router(self, frames: list[bytes], pending: list[PendingAppend],
                     reads: list[Incoming]) -> int:
        incoming = self.rpc.decode(frames)  # a bad frame is answered (and counted) there
        if incoming is None:
            return 0
        request = incoming.request
        if isinstance(request, Append):
            error = self.core.validate_append(request)
            if error:
                self.rpc.finish(incoming, error)
                return 0
            pending.append(PendingAppend(incoming, request))
            return len(request.events)
        reads.append(incoming)
        return 0

    def _commit_and_publish(self, pending: list[PendingAppend]) -> None:
        if not pending:
            return
        started = time.perf_counter()
        outcome = self.core.commit(pending)
        if outcome.error is not None:
            log.error("eventlog.commit_failed", error=str(outcome.error), events=sum(len(p.request.events) for p in pending))
        for stored, type_ in zip(outcome.published, outcome.types, strict=True):
            self.pub.send_multipart([type_.encode(), encode(stored)])
        for incoming, reply in outcome.replies:
            if incoming is not None:  # None: PUSHed to events.in, nobody waits for a reply
                self.rpc.finish(incoming, reply)
        if outcome.published:
            log.debug("eventlog.committed", events=len(outcome.published),
                      head_seq=self.store.head_seq,
                      duration_ms=round((time.perf_counter() - started) * 1000, 2))

    def _answer_read(self, request: Any, origin: bytes) -> Any:
        return self.core.handle_read(request)

    def _count_error(self, reply: ErrorReply) -> None:
        self.core.counters.error_replies += 1

    def _drop(self, socket_name: str, reason: str) -> None:
        self.core.counters.dropped_frames += 1
        log.warning("eventlog.frame_dropped", socket=socket_name, reason=reason,
                    dropped_total=self.core.counters.dropped_frames)


def _append_context(request: Any) -> dict[str, Any]:
    """Bind the msg_id of an append's (first) event; the reply adds its seq to the line."""
    context = request_context(request)
    events = getattr(request, "events", None)
    if events:
        context["msg_id"] = events[0].msg_id
    return context


def run(paths: Paths, config: Config) -> int:
    try:
        return serve_daemon("eventlog", paths, lambda: EventlogServer(paths, config),
                            before_serve=lambda server: server.announce_start())
    except LogDamaged as exc:
        # Restarting cannot mend the file: say what to do once, and exit with the code supervisord
        # does not restart (as for a bad configuration), instead of a crash loop ending in FATAL.
        log.error("eventlog.log_damaged", error=str(exc), db=str(exc.db_path))
        print(f"eventlog: {exc}", file=sys.stderr)
        time.sleep(CONFIG_ERROR_HOLD_S)
        return CONFIG_ERROR_EXIT


def main(argv: list[str] | None = None) -> int:
    from services.common.entry import run_service

    return run_service("eventlog", run, argv)


if __name__ == "__main__":
    sys.exit(main())
