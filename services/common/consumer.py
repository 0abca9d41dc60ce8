"""Consume the event log exactly once per event, across crashes and restarts.

The recipe (DESIGN.md, "Sockets"):

1. Subscribe to ``events.pub`` first, so nothing published from now on is missed.
2. Catch up with ``Replay`` from the stored cursor (the last seq fully processed).
3. From then on, every published event is only a doorbell: the consumer replays
   from its cursor, so a lost or duplicated broadcast changes nothing; with no
   doorbell for ``idle_check_s`` it replays anyway.
4. After the handler's side effects, store the cursor (atomic write). A crash
   between effect and cursor write replays the event: handlers must be
   idempotent by seq.

Handlers get decoded :class:`Envelope` objects. An event that does not decode
(a newer producer's type this build does not know) is logged and skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog
import zmq

from protocol.codec import Codec, ProtocolError, encode
from protocol.envelope import Envelope
from services.common.atomic import write_atomic
from services.common.eventlog_client import EventlogClient
from services.common.logging import get_logger
from services.common.paths import Paths
from services.common.rpc import ServiceUnavailable
from services.common.zmqio import connect_sub

log = get_logger(__name__)

Handler = Callable[[Envelope], None]


class Cursor:
    """The last seq a consumer has fully processed, in ``data/state/<name>.cursor``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> int:
        try:
            return int(self.path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            raise ValueError(f"{self.path} is corrupt (not a number); delete it to reprocess the whole log") from None

    def store(self, seq: int) -> None:
        write_atomic(self.path, f"{seq}\n".encode())


class EventConsumer:
    def __init__(self, paths: Paths, name: str, types: Sequence[str], handler: Handler, *,
                 ctx: zmq.Context | None = None, page_size: int = 1000, idle_check_s: float = 1.0,
                 cursor: Cursor | None = None) -> None:
        self.name = name
        self.types = list(types)
        self.handler = handler
        self.page_size = page_size
        self.idle_check_s = idle_check_s
        # A consumer whose effects live in a database can keep its cursor in the
        # same transaction as the effects (pass any object with load/store).
        self.cursor = cursor or Cursor(paths.state / f"{name}.cursor")
        ctx = ctx or zmq.Context.instance()
        self._sub = connect_sub(ctx, paths.endpoint("events.pub"), self.types)
        self._log = EventlogClient(paths, ctx=ctx)
        self._codec: Codec[Envelope] = Codec(Envelope)
        self.position = self.cursor.load()
        self.head_seq = 0  # the log's last seq, as of the latest replay (for stats)
        self.handled = 0

    def close(self) -> None:
        self._sub.close(linger=0)
        self._log.close()

    @property
    def doorbell(self) -> zmq.Socket:
        """The SUB socket, for callers that poll it together with their own sockets."""
        return self._sub

    def drain_doorbell(self) -> bool:
        """Discard waiting broadcasts (one replay answers them all); True if any."""
        rang = False
        while True:
            try:
                self._sub.recv_multipart(zmq.NOBLOCK)
                rang = True
            except zmq.Again:
                return rang

    def catch_up(self, max_events: int | None = None) -> int:
        """Handle matching events after the cursor (at most ``max_events``); return how many.

        With ``max_events`` a busy caller can interleave its own requests with
        a long catch-up; call again until it returns less than asked.
        """
        handled = 0
        while True:
            limit = self.page_size if max_events is None else min(self.page_size, max_events - handled)
            if limit <= 0:
                return handled
            batch = self._log.replay(self.position, limit=limit, types=self.types)
            self.head_seq = max(self.head_seq, batch.head_seq)
            for stored in batch.events:
                self._handle(stored)
                handled += 1
                self.position = stored.seq or self.position
            full_page = len(batch.events) >= limit or batch.truncated
            if not full_page and batch.head_seq > self.position:
                # Nothing more of our types up to the head: skip over the rest.
                self.position = batch.head_seq
            if batch.events or not full_page:
                self.cursor.store(self.position)
            if not full_page:
                return handled

    def _handle(self, stored) -> None:  # noqa: ANN001 - StoredEnvelope
        try:
            env = self._codec.decode(encode(stored))
        except ProtocolError as exc:
            log.warning("consumer.undecodable_event", consumer=self.name, seq=stored.seq, error=str(exc))
            return
        started = time.perf_counter()
        # Every line the handler logs names the event it was handling (DESIGN: bind msg_id/seq).
        with structlog.contextvars.bound_contextvars(seq=env.seq, msg_id=env.msg_id):
            self.handler(env)
            self.handled += 1
            log.debug("consumer.handled", consumer=self.name, type=env.type,
                      duration_ms=round((time.perf_counter() - started) * 1000, 2))

    def poll(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for a doorbell, then catch up; return events handled."""
        if self._sub.poll(int(timeout_s * 1000), zmq.POLLIN):
            self.drain_doorbell()
        return self.catch_up()

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Follow the log until ``should_stop()``; an eventlog restart only delays it."""
        while not should_stop():
            try:
                self.poll(self.idle_check_s)
            except ServiceUnavailable as exc:
                log.warning("consumer.eventlog_unavailable", consumer=self.name, error=str(exc))
                time.sleep(0.5)
