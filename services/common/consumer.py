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
                 ctx: zmq.Context | None = None, page_size: int = 1000, idle_check_s: float = 1.0) -> None:
        self.name = name
        self.types = list(types)
        self.handler = handler
        self.page_size = page_size
        self.idle_check_s = idle_check_s
        self.cursor = Cursor(paths.state / f"{name}.cursor")
        ctx = ctx or zmq.Context.instance()
        self._sub = connect_sub(ctx, paths.endpoint("events.pub"), self.types)
        self._log = EventlogClient(paths, ctx=ctx)
        self._codec: Codec[Envelope] = Codec(Envelope)
        self.position = self.cursor.load()
        self.handled = 0

    def close(self) -> None:
        self._sub.close(linger=0)
        self._log.close()

    def catch_up(self) -> int:
        """Handle every matching event after the cursor; return how many were handled."""
        handled = 0
        while True:
            batch = self._log.replay(self.position, limit=self.page_size, types=self.types)
            for stored in batch.events:
                self._handle(stored)
                handled += 1
            if batch.events:
                self.position = batch.events[-1].seq or self.position
            full_page = len(batch.events) >= self.page_size
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
        self.handler(env)
        self.handled += 1
        log.debug("consumer.handled", consumer=self.name, seq=env.seq, type=env.type,
                  duration_ms=round((time.perf_counter() - started) * 1000, 2))

    def poll(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for a doorbell, then catch up; return events handled."""
        if self._sub.poll(int(timeout_s * 1000), zmq.POLLIN):
            while True:  # drain: one replay answers any number of doorbells
                try:
                    self._sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
        return self.catch_up()

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Follow the log until ``should_stop()``; an eventlog restart only delays it."""
        while not should_stop():
            try:
                self.poll(self.idle_check_s)
            except ServiceUnavailable as exc:
                log.warning("consumer.eventlog_unavailable", consumer=self.name, error=str(exc))
                time.sleep(0.5)
