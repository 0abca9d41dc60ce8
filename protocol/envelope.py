"""The envelope every logged event travels in.

Producers build an :class:`Envelope` without ``seq``; the eventlog is the only
process that assigns ``seq`` (gap-free, starting at 1) when it commits the
event. ``msg_id`` doubles as the event's idempotency key: appending the same
``msg_id`` twice stores it once, so producers may resend after a timeout.
"""

from __future__ import annotations

import os
import time

import msgspec

from protocol.events import Event

PROTOCOL_VERSION = 1


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """One event plus its header.

    - ``msg_id``: unique id, chosen by the producer (sortable, see :func:`new_id`).
    - ``ts``: producer's wall-clock time, seconds since the epoch.
    - ``source``: producing service (``chat``, ``ingest``, ``cli`` ...).
    - ``parent_id``: ``msg_id`` of what caused this event, if anything.
    - ``seq``: position in the log; ``None`` until the eventlog commits it.
    - ``v``: protocol version of the producer.
    - ``body``: the event itself, a tagged Struct from :mod:`protocol.events`.
    """

    msg_id: str
    ts: float
    source: str
    body: Event
    parent_id: str | None = None
    seq: int | None = None
    v: int = PROTOCOL_VERSION

    @property
    def type(self) -> str:
        return type(self.body).__struct_config__.tag


class StoredEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """An :class:`Envelope` whose body is already-encoded msgpack.

    The eventlog publishes and replays these without decoding each body, which
    keeps replay fast; on the wire the bytes are identical to an Envelope's,
    so consumers decode them with the ordinary Envelope codec.
    """

    msg_id: str
    ts: float
    source: str
    body: msgspec.Raw
    parent_id: str | None = None
    seq: int | None = None
    v: int = PROTOCOL_VERSION


def new_id(prefix: str = "") -> str:
    """A unique id that sorts by creation time: ms timestamp + 64 random bits."""
    stamp = f"{time.time_ns() // 1_000_000:013x}"
    return f"{prefix}{stamp}{os.urandom(8).hex()}"


def new_envelope(
    body: Event, *, source: str, parent_id: str | None = None, msg_id: str | None = None
) -> Envelope:
    """Wrap ``body`` in a fresh envelope (no seq: the eventlog assigns it)."""
    return Envelope(
        msg_id=msg_id or new_id(),
        ts=time.time(),
        source=source,
        body=body,
        parent_id=parent_id,
    )
