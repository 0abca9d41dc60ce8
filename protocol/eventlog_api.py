"""The eventlog's sockets: appends in, committed events out, replay on request.

- PULL ``events.in``: fire-and-forget producers PUSH :class:`Append` frames.
- ROUTER ``events.ctl``: :class:`Append` (acknowledged), :class:`Replay`,
  :class:`GetStats`, :class:`Ping`.
- PUB ``events.pub``: every committed event as two frames,
  ``[type tag, StoredEnvelope]``, so subscribers can filter by type prefix.

A published event is only a doorbell: subscribers that miss one catch up with
:class:`Replay` from the last seq they processed.
"""

from __future__ import annotations

from typing import Union

import msgspec

from protocol.envelope import Envelope, StoredEnvelope
from protocol.service_api import ErrorReply, Ping, Pong

# Replay pages are bounded so one reply stays well under the frame limit.
MAX_REPLAY_LIMIT = 5000


# msgspec applies kw_only only to the fields a class itself defines (frozen is
# inherited): every subclass repeats kw_only=True.
class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class Append(_Msg, tag="append", kw_only=True):
    """Append events to the log, in order.

    Sender: any service. Receiver guarantee: when :class:`Appended` comes
    back, every event is durably committed (fsync'd) and has a seq; an
    envelope whose ``msg_id`` is already in the log is not stored again and
    its existing seq is returned with ``duplicate`` set. ``seq`` in the
    envelopes must be None: only the eventlog assigns it.
    """

    events: list[Envelope]
    request_id: str = ""


class Appended(_Msg, tag="appended", kw_only=True):
    """Reply to :class:`Append`: one seq per event, in request order."""

    request_id: str
    seqs: list[int]
    duplicates: list[bool]


class Replay(_Msg, tag="replay", kw_only=True):
    """Ask for committed events with ``seq > after_seq``, oldest first.

    ``types`` filters by exact tag (empty: all). At most ``limit`` events
    (capped at MAX_REPLAY_LIMIT) come back; page with the last seq received.
    """

    after_seq: int = 0
    limit: int = 1000
    types: list[str] = []
    request_id: str = ""


class ReplayBatch(_Msg, tag="replay_batch", kw_only=True):
    """Reply to :class:`Replay`. ``head_seq`` is the newest seq in the log."""

    request_id: str
    events: list[StoredEnvelope]
    head_seq: int
    # True when the page was cut short to keep the reply under the frame
    # limit: more events follow, ask again from the last seq received.
    truncated: bool = False


class GetStats(_Msg, tag="get_stats", kw_only=True):
    """Ask for the log's size and shape."""

    request_id: str = ""


class LogStats(_Msg, tag="log_stats", kw_only=True):
    """Reply to :class:`GetStats`."""

    request_id: str
    count: int
    head_seq: int
    by_type: dict[str, int]
    db_bytes: int
    first_ts: float | None = None
    last_ts: float | None = None
    appends_total: int = 0
    commits_total: int = 0
    dropped_frames: int = 0


EventlogRequest = Union[Append, Replay, GetStats, Ping]
EventlogReply = Union[Appended, ReplayBatch, LogStats, Pong, ErrorReply]
