"""Page through the event log, oldest first, as typed envelopes: the one replay loop.

Whoever reads the log from a seq on (chat rebuilding a session's history,
ingest finding the turns a forget must erase, an index rebuild) wants the
same thing: every decodable envelope of some types after a seq, page by
page, up to an optional last seq. Where the pages come from differs: the
eventlog daemon over ``events.ctl`` (a daemon, while the log is live) or a
read-only SQLite connection (an audit or a rebuild with the daemons down).
A :data:`Pager` hides that difference.

An event that no longer decodes (written by a newer version, or damaged) is
skipped and reported to ``on_undecodable``: a reader of the history must
not stop at the first event it cannot read.

The common consumer (services.common.consumer) is not this: it follows the
log with a stored cursor and skips ahead to the head; this reads a span.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from protocol.codec import Codec, ProtocolError, encode
from protocol.envelope import Envelope, StoredEnvelope
from services.common.eventlog_client import EventlogClient
from services.lib.eventstore import store

DEFAULT_PAGE = 1000


class Pager(Protocol):
    """One page: at most ``limit`` events of ``types`` (all when empty) with seq > ``after_seq``."""

    def __call__(self, after_seq: int, limit: int, types: Sequence[str]) -> Sequence[StoredEnvelope]: ...


def client_pager(client: EventlogClient) -> Pager:
    """Pages from the eventlog daemon (raises ServiceUnavailable/RemoteError if it is down)."""
    return lambda after_seq, limit, types: client.replay(after_seq, limit=limit, types=types).events


def db_pager(conn: sqlite3.Connection) -> Pager:
    """Pages straight from events.db (a read-only connection from eventstore.store.connect)."""
    return lambda after_seq, limit, types: store.replay(conn, after_seq, limit, types)[0]


_envelope: Codec[Envelope] = Codec(Envelope)


def logged_envelopes(pager: Pager, types: Sequence[str] = (), *, after_seq: int = 0,
                     until_seq: int | None = None, page: int = DEFAULT_PAGE,
                     on_undecodable: Callable[[StoredEnvelope, ProtocolError], None] | None = None,
                     ) -> Iterator[Envelope]:
    """Every decodable envelope of ``types`` with ``after_seq`` < seq <= ``until_seq``, in seq order."""
    after = after_seq
    types = list(types)
    while until_seq is None or after < until_seq:
        events = pager(after, page, types)
        if not events:
            return
        for stored in events:
            seq = stored.seq or after
            if until_seq is not None and seq > until_seq:
                return
            after = seq
            try:
                yield _envelope.decode(encode(stored))
            except ProtocolError as exc:
                if on_undecodable is not None:
                    on_undecodable(stored, exc)
