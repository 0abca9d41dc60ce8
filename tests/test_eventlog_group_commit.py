"""Group commit on the real eventlog daemon: a burst of appends shares one transaction (one fsync).

The daemon drains every frame already waiting before it commits, so appends
that arrive while it is busy committing (fsync) go into the next transaction
together. The burst is made deterministic, without any timing assumption, by
holding the daemon with SIGSTOP (as if stuck in a long fsync) while the
appends queue up on its sockets, then letting it go. ``commits_total`` and
``appends_total`` from GetStats count transactions and committed events.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
import zmq

from protocol.codec import Codec, encode
from protocol.envelope import Envelope, new_envelope, new_id
from protocol.eventlog_api import Append, Appended, EventlogReply, GetStats, LogStats, Replay
from protocol.events import ChatTurnCompleted
from protocol.service_api import Ping, Pong
from services.common.eventlog_client import EventlogClient
from services.common.paths import Paths
from services.common.rpc import RpcClient
from services.common.zmqio import connect_dealer, connect_push
from services.lib.eventstore.store import connect, verify

pytestmark = pytest.mark.timeout(120)

PUSHERS = 4
PER_PUSHER = 100
ACKED = 8  # DEALER clients that each wait for their Appended reply
BURST = PUSHERS * PER_PUSHER + ACKED
# A burst of BURST events may take a few transactions (the daemon's IO thread
# reads the queued frames in batches while its main thread commits), never
# anything near one each: at least 20 events per commit on average.
MAX_COMMITS = BURST // 20
WAIT_S = 60.0
REPLY: Codec[Any] = Codec(EventlogReply)


def _turn(i: int) -> Envelope:
    return new_envelope(ChatTurnCompleted(session_id="burst", turn_index=i, user_text=f"q{i}",
                                          assistant_text=f"a{i}", model="m"), source="test")


def _stats(rpc: RpcClient) -> LogStats:
    stats = rpc.request(GetStats(request_id=new_id("s")))
    assert isinstance(stats, LogStats), stats
    return stats


def _wait_head(rpc: RpcClient, target: int) -> int:
    deadline = time.monotonic() + WAIT_S
    head = 0
    while time.monotonic() < deadline:
        head = rpc.request(Replay(after_seq=0, limit=1, request_id=new_id("q"))).head_seq
        if head >= target:
            return head
        time.sleep(0.05)
    raise AssertionError(f"head stuck at {head}, expected {target}")


def test_concurrent_burst_is_committed_in_a_few_transactions(eventlog_proc: Any, paths: Paths,
                                                              ctx: zmq.Context) -> None:
    rpc = RpcClient(paths, "eventlog", "events.ctl", EventlogReply, timeout_s=WAIT_S, ctx=ctx)
    client = EventlogClient(paths, timeout_s=10.0, ctx=ctx)
    try:
        # Every connection is established (handshake done) before the daemon is held.
        pushes = [connect_push(ctx, paths.endpoint("events.in")) for _ in range(PUSHERS)]
        dealers = [connect_dealer(ctx, paths.endpoint("events.ctl")) for _ in range(ACKED)]
        start_head = client.append([_turn(-1)]).seqs[0]
        for sock in pushes:
            sock.send(encode(Append(events=[_turn(-2)])))  # one warm-up event each
        for dealer in dealers:
            dealer.send(encode(Ping(request_id=new_id("p"))))
            assert dealer.poll(int(WAIT_S * 1000), zmq.POLLIN), "no Pong"
            assert isinstance(REPLY.decode(dealer.recv()), Pong)
        _wait_head(rpc, start_head + PUSHERS)
        before = _stats(rpc)
        sent: list[list[Envelope]] = [[_turn(p * PER_PUSHER + i) for i in range(PER_PUSHER)]
                                      for p in range(PUSHERS)]
        acked = [_turn(10_000 + i) for i in range(ACKED)]

        def push_all(sock: zmq.Socket, events: list[Envelope]) -> None:
            for env in events:
                sock.send(encode(Append(events=[env])))

        os.kill(eventlog_proc.pid, signal.SIGSTOP)
        try:
            threads = [threading.Thread(target=push_all, args=(sock, events))
                       for sock, events in zip(pushes, sent, strict=True)]
            for thread in threads:
                thread.start()
            for dealer, env in zip(dealers, acked, strict=True):
                dealer.send(encode(Append(events=[env], request_id=env.msg_id)))
            for thread in threads:
                thread.join(WAIT_S)
                assert not thread.is_alive(), "a sender is stuck"
        finally:
            os.kill(eventlog_proc.pid, signal.SIGCONT)

        head = _wait_head(rpc, before.head_seq + BURST)
        for dealer in dealers:  # every acknowledged append got its own reply
            assert dealer.poll(int(WAIT_S * 1000), zmq.POLLIN), "no Appended reply"
            reply = REPLY.decode(dealer.recv())
            assert isinstance(reply, Appended) and not reply.duplicates[0], reply
            dealer.close(linger=0)
        for sock in pushes:
            sock.close(linger=0)

        after = _stats(rpc)
        events = after.appends_total - before.appends_total
        commits = after.commits_total - before.commits_total
        assert head == before.head_seq + BURST
        assert events == BURST
        assert 1 <= commits <= MAX_COMMITS, f"{events} events took {commits} commits"
    finally:
        rpc.close()
        client.close()

    # Grouped, yet nothing lost or reordered within a sender; the log verifies.
    conn = connect(paths.events_db, readonly=True)
    try:
        report = verify(conn)
        assert report.ok and report.head_seq == head
        rows = conn.execute("SELECT event_id FROM events WHERE seq > ? ORDER BY seq", (before.head_seq,)).fetchall()
    finally:
        conn.close()
    order = [row[0] for row in rows]
    for events_of_one_sender in sent:
        ids = [env.msg_id for env in events_of_one_sender]
        assert [i for i in order if i in set(ids)] == ids
