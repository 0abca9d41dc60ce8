"""Socket-free request handling for the eventlog: decode, validate, commit.

The process shell feeds raw frames in and sends what comes out; this module
decides everything else, so it is testable without ZeroMQ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from protocol.codec import Codec
from protocol.envelope import StoredEnvelope
from protocol.eventlog_api import (
    MAX_REPLAY_LIMIT,
    Append,
    Appended,
    EventlogRequest,
    GetStats,
    LogStats,
    Replay,
    ReplayBatch,
)
from protocol.service_api import ErrorReply, Ping
from services.common.daemon import Readiness
from services.lib.eventstore import store as store_mod
from services.lib.eventstore.store import EventStore, LogFull


@dataclass
class PendingAppend:
    """An append waiting for the next group commit. ``origin`` is opaque (a ROUTER identity, or None for PULL)."""

    origin: Any
    request: Append


@dataclass
class Counters:
    appends_total: int = 0
    commits_total: int = 0
    dropped_frames: int = 0
    error_replies: int = 0


@dataclass
class CommitOutcome:
    replies: list[tuple[Any, Any]] = field(default_factory=list)  # (origin, reply)
    published: list[StoredEnvelope] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    error: Exception | None = None


class EventlogCore:
    def __init__(self, store: EventStore, readiness: Readiness) -> None:
        self.store = store
        self.readiness = readiness
        self.counters = Counters()
        self.codec: Codec[Any] = Codec(EventlogRequest)

    def decode(self, frame: bytes) -> Any:
        return self.codec.decode(frame)

    def validate_append(self, request: Append) -> ErrorReply | None:
        for env in request.events:
            if env.seq is not None:
                return ErrorReply(code="bad_request", request_id=request.request_id,
                                  message=f"event {env.msg_id} carries seq {env.seq}; leave seq unset, the eventlog assigns it")
            if not env.msg_id or len(env.msg_id) > 200:
                return ErrorReply(code="bad_request", request_id=request.request_id,
                                  message="every event needs a msg_id of 1-200 characters")
            # SQLite refuses these (NaN binds as NULL; ints are 64-bit signed):
            # caught here, they never reach a group commit they would abort.
            if not math.isfinite(env.ts):
                return ErrorReply(code="bad_request", request_id=request.request_id,
                                  message=f"event {env.msg_id} has ts {env.ts}; send seconds since the epoch")
            if not 0 <= env.v < 2**63:
                return ErrorReply(code="bad_request", request_id=request.request_id,
                                  message=f"event {env.msg_id} has protocol version {env.v}; send protocol.PROTOCOL_VERSION")
        return None

    def commit(self, pending: list[PendingAppend]) -> CommitOutcome:
        """Commit every pending append in one transaction (group commit)."""
        outcome = CommitOutcome()
        if not pending:
            return outcome
        envelopes = [env for p in pending for env in p.request.events]
        try:
            results = self.store.append_batch(envelopes)
        except LogFull as exc:  # nothing of it was written: every waiter hears it, and can resend later
            for p in pending:
                outcome.replies.append((p.origin, ErrorReply(
                    code="disk_full", request_id=p.request.request_id,
                    message=f"{exc}; the event log committed none of these events (every event it "
                            f"acknowledged before is kept): resend once there is space")))
            outcome.error = exc
            return outcome
        except Exception as exc:  # an I/O error: tell every waiter, keep serving
            if len(pending) > 1:
                # One poisoned request must not fail (or, for PUSHed appends,
                # silently lose) the others that shared its transaction.
                return self._commit_each(pending)
            for p in pending:
                outcome.replies.append((p.origin, ErrorReply(
                    code="unavailable", request_id=p.request.request_id,
                    message=f"the event log could not commit: {exc}; retry later")))
            outcome.error = exc
            return outcome
        self.counters.commits_total += 1
        self.counters.appends_total += len(envelopes)
        index = 0
        for p in pending:
            chunk = results[index:index + len(p.request.events)]
            index += len(p.request.events)
            outcome.replies.append((p.origin, Appended(
                request_id=p.request.request_id,
                seqs=[r.seq for r in chunk], duplicates=[r.duplicate for r in chunk])))
            for env, result in zip(p.request.events, chunk, strict=True):
                if result.stored is not None:
                    outcome.published.append(result.stored)
                    outcome.types.append(env.type)
        return outcome

    def _commit_each(self, pending: list[PendingAppend]) -> CommitOutcome:
        outcome = CommitOutcome()
        for p in pending:
            single = self.commit([p])
            outcome.replies.extend(single.replies)
            outcome.published.extend(single.published)
            outcome.types.extend(single.types)
            outcome.error = outcome.error or single.error
        return outcome

    def handle_read(self, request: Any) -> Any:
        """Answer a request that does not write: Replay, GetStats, Ping."""
        match request:
            case Replay(after_seq=after, limit=limit, types=types, request_id=rid):
                if after < 0 or limit < 1:
                    return ErrorReply(code="bad_request", request_id=rid,
                                      message="replay needs after_seq >= 0 and limit >= 1")
                page = min(limit, MAX_REPLAY_LIMIT)
                events, head = self.store.replay(after, page, types)
                truncated = len(events) < page and bool(events) and (events[-1].seq or 0) < head and \
                    self.store.replay(events[-1].seq or 0, 1, types)[0] != []
                return ReplayBatch(request_id=rid, events=events, head_seq=head, truncated=truncated)
            case GetStats(request_id=rid):
                s = store_mod.stats(self.store._conn, self.store.db_path)
                return LogStats(request_id=rid, appends_total=self.counters.appends_total,
                                commits_total=self.counters.commits_total,
                                dropped_frames=self.counters.dropped_frames, **s)  # type: ignore[arg-type]
            case Ping(request_id=rid):
                self.readiness.details["head_seq"] = str(self.store.head_seq)
                return self.readiness.pong(rid)
        return ErrorReply(code="bad_request", message=f"unsupported request {type(request).__name__}")

