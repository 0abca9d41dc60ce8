"""The real eventlog daemon over real ipc sockets: append, publish, replay,
hostile frames, crash recovery and clean shutdown. Every receive has a timeout.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import zmq

from protocol.codec import Codec, encode
from protocol.envelope import Envelope, new_envelope, new_id
from protocol.eventlog_api import (
    Append,
    Appended,
    EventlogReply,
    GetStats,
    LogStats,
    Replay,
    ReplayBatch,
)
from protocol.events import ChatTurnCompleted, ServiceFailed, ServiceStarted
from protocol.service_api import ErrorReply, Ping, Pong
from services.common.eventlog_client import EventlogClient
from services.common.paths import Paths
from services.common.rpc import RemoteError, RpcClient
from services.common.zmqio import connect_dealer, connect_push, connect_sub
from services.lib.eventstore.store import connect, verify

pytestmark = pytest.mark.timeout(60)

RECV_TIMEOUT_MS = 5000
ENVELOPE: Codec[Envelope] = Codec(Envelope)
REPLY: Codec[Any] = Codec(EventlogReply)


def turn(i: int, *, msg_id: str | None = None) -> Envelope:
    body = ChatTurnCompleted(session_id="s1", turn_index=i, user_text=f"q{i}",
                             assistant_text=f"a{i}", model="m")
    return new_envelope(body, source="test", msg_id=msg_id)


def failure(i: int) -> Envelope:
    return new_envelope(ServiceFailed(service="test", pid=i, error="Boom"), source="test")


def probe() -> Envelope:
    return new_envelope(ServiceStarted(service="probe", pid=os.getpid()), source="test")


@pytest.fixture
def client(eventlog_proc: Any, paths: Paths, ctx: zmq.Context) -> Iterator[EventlogClient]:
    c = EventlogClient(paths, timeout_s=10.0, ctx=ctx)
    yield c
    c.close()


@pytest.fixture
def rpc(eventlog_proc: Any, paths: Paths, ctx: zmq.Context) -> Iterator[RpcClient]:
    c = RpcClient(paths, "eventlog", "events.ctl", EventlogReply, timeout_s=10.0, ctx=ctx)
    yield c
    c.close()


def recv_multipart(sock: zmq.Socket, timeout_ms: int = RECV_TIMEOUT_MS) -> list[bytes]:
    if not sock.poll(timeout_ms, zmq.POLLIN):
        raise AssertionError(f"nothing received within {timeout_ms} ms")
    return sock.recv_multipart()


def subscribe(ctx: zmq.Context, paths: Paths, client: EventlogClient, topics: list[str]) -> tuple[zmq.Socket, int]:
    """A SUB socket whose subscription is live (proved by a probe event).

    Returns the socket and the probe's seq: everything committed after it
    reaches the socket.
    """
    sub = connect_sub(ctx, paths.endpoint("events.pub"), topics)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        env = probe()
        client.append([env])
        while sub.poll(100, zmq.POLLIN):
            topic, data = sub.recv_multipart()
            got = ENVELOPE.decode(data)
            if got.msg_id == env.msg_id:
                return sub, got.seq  # type: ignore[return-value]
    raise AssertionError("subscription never became live")


def receive_events(sub: zmq.Socket, count: int) -> list[tuple[str, Envelope]]:
    out = []
    for _ in range(count):
        topic, data = recv_multipart(sub)
        out.append((topic.decode(), ENVELOPE.decode(data)))
    return out


def raw_request(dealer: zmq.Socket, frames: list[bytes]) -> Any:
    dealer.send_multipart(frames)
    [reply] = recv_multipart(dealer)
    return REPLY.decode(reply)


def ping_ok(dealer: zmq.Socket) -> None:
    rid = new_id("p")
    reply = raw_request(dealer, [encode(Ping(request_id=rid))])
    assert isinstance(reply, Pong) and reply.ready and reply.request_id == rid


def wait_head(rpc: RpcClient, target: int, timeout_s: float = 20) -> int:
    deadline = time.monotonic() + timeout_s
    head = 0
    while time.monotonic() < deadline:
        head = rpc.request(Replay(after_seq=0, limit=1, request_id=new_id("q"))).head_seq
        if head >= target:
            return head
        time.sleep(0.02)
    raise AssertionError(f"head stuck at {head}, expected {target}")


def replay_all(client: EventlogClient, limit: int = 1000) -> list[Envelope]:
    events: list[Envelope] = []
    after = 0
    while True:
        batch = client.replay(after, limit=limit)
        events.extend(ENVELOPE.decode(encode(e)) for e in batch.events)
        if not batch.events:
            return events
        after = batch.events[-1].seq


# --------------------------------------------------------------------------- append + publish


def test_append_gets_seqs_and_is_published_in_seq_order(client: EventlogClient, paths: Paths,
                                                        ctx: zmq.Context) -> None:
    sub_all, probe_seq = subscribe(ctx, paths, client, [""])
    sub_service, last_probe_seq = subscribe(ctx, paths, client, ["service."])
    while receive_events(sub_all, 1)[0][1].seq != last_probe_seq:
        pass  # skip the second subscription's probes

    sent: list[Envelope] = []
    seqs: list[int] = []
    for batch in ([turn(0)], [turn(1), failure(2), turn(3)], [failure(4)], [turn(i) for i in range(5, 25)]):
        reply = client.append(batch)
        assert isinstance(reply, Appended)
        assert reply.duplicates == [False] * len(batch)
        sent.extend(batch)
        seqs.extend(reply.seqs)
    assert seqs == list(range(seqs[0], seqs[0] + len(sent)))  # gap-free, in request order

    received = receive_events(sub_all, len(sent))
    assert [env.seq for _, env in received] == seqs
    for (topic, got), env, seq in zip(received, sent, seqs, strict=True):
        assert topic == env.type
        assert got == msgspec.structs.replace(env, seq=seq)
    assert not sub_all.poll(300, zmq.POLLIN)  # nothing extra

    # The filtered subscriber saw only service.* events, same order.
    expected = [(env.type, seq) for env, seq in zip(sent, seqs, strict=True) if env.type.startswith("service.")]
    got = [(t, e.seq) for t, e in receive_events(sub_service, len(expected))]
    assert got == expected
    assert not sub_service.poll(300, zmq.POLLIN)
    assert probe_seq < seqs[0]


def test_pushed_and_acked_appends_share_one_ordered_stream(client: EventlogClient, rpc: RpcClient,
                                                           paths: Paths, ctx: zmq.Context) -> None:
    sub, probe_seq = subscribe(ctx, paths, client, [""])
    push = connect_push(ctx, paths.endpoint("events.in"))
    pushed = [turn(i) for i in range(200)]
    for env in pushed:
        push.send(encode(Append(events=[env])))
    acked_env = failure(1)
    client.append([acked_env])
    head = wait_head(rpc, probe_seq + 201)
    received = receive_events(sub, head - probe_seq)
    assert [e.seq for _, e in received] == list(range(probe_seq + 1, head + 1))
    ids = [e.msg_id for _, e in received]
    assert acked_env.msg_id in ids
    assert [i for i in ids if i != acked_env.msg_id] == [e.msg_id for e in pushed]  # PUSH order kept
    push.close(linger=0)


def test_duplicate_append_is_acked_but_not_published_again(client: EventlogClient, paths: Paths,
                                                           ctx: zmq.Context) -> None:
    sub, _ = subscribe(ctx, paths, client, [""])
    env = turn(1)
    first = client.append([env])
    assert first.duplicates == [False]
    [(_, got)] = receive_events(sub, 1)
    assert got.msg_id == env.msg_id and got.seq == first.seqs[0]

    again = client.append([env])
    assert again.seqs == first.seqs and again.duplicates == [True]
    mixed = client.append([env, turn(2), env])
    assert mixed.duplicates == [True, False, True]
    assert mixed.seqs == [first.seqs[0], first.seqs[0] + 1, first.seqs[0]]

    [(_, nxt)] = receive_events(sub, 1)  # the next publication is the new event
    assert nxt.seq == first.seqs[0] + 1 and nxt.msg_id != env.msg_id
    assert not sub.poll(300, zmq.POLLIN)


# --------------------------------------------------------------------------- replay


def test_replay_pages(client: EventlogClient) -> None:
    sent = [turn(i) if i % 3 else failure(i) for i in range(47)]
    client.append(sent[:20])
    for env in sent[20:]:
        client.append([env])
    batch = client.replay(0, limit=10)
    head = batch.head_seq
    assert head == 1 + len(sent)  # the daemon's own service.started is seq 1

    seen: list[Envelope] = []
    after = 0
    pages = 0
    while True:
        batch = client.replay(after, limit=10)
        assert isinstance(batch, ReplayBatch) and batch.head_seq == head
        assert len(batch.events) <= 10
        if not batch.events:
            break
        pages += 1
        seen.extend(ENVELOPE.decode(encode(e)) for e in batch.events)
        after = batch.events[-1].seq
    assert pages == 5
    assert [e.seq for e in seen] == list(range(1, head + 1))
    assert seen[0].type == "service.started" and seen[0].source == "eventlog"
    assert [msgspec.structs.replace(e, seq=None) for e in seen[1:]] == sent

    failures = client.replay(0, limit=5, types=["service.failed"])
    assert [ENVELOPE.decode(encode(e)).body for e in failures.events] == [
        e.body for e in sent if e.type == "service.failed"][:5]
    with pytest.raises(RemoteError) as info:
        client.replay(-1)
    assert info.value.code == "bad_request"


# --------------------------------------------------------------------------- hostile frames


def _hostile_frames() -> list[tuple[str, list[bytes], str]]:
    return [
        ("random bytes", [os.urandom(64)], "malformed"),
        ("empty frame", [b""], "malformed"),
        ("unknown type tag", [msgspec.msgpack.encode({"type": "drop_table", "request_id": "x"})], "malformed"),
        ("wrong field type", [msgspec.msgpack.encode({"type": "replay", "after_seq": "zero"})], "malformed"),
        ("a reply sent as request", [encode(Pong(request_id="x", service="s", pid=1, ready=True,
                                                 started_at=0.0))], "malformed"),
        ("invalid utf-8", [b"\x82\xa4type\xa4ping\xaarequest_id\xa2\xff\xfe"], "malformed"),
        ("deep nesting", [b"\x82\xa4type\xa4ping\xa1x" + b"\x91" * 100_000 + b"\xc0"], "malformed"),
        ("multi-frame", [encode(Ping(request_id="x")), encode(Ping(request_id="y"))], "malformed"),
        ("oversized 5 MiB", [encode(Ping(request_id="x")) + b"\x00" * (5 * 1024 * 1024)], "too_large"),
        ("append with seq", [encode(Append(events=[msgspec.structs.replace(turn(1), seq=7)]))], "bad_request"),
        ("append with NaN ts", [encode(Append(events=[msgspec.structs.replace(turn(1), ts=float("nan"))]))],
         "bad_request"),
        ("replay with negative seq", [encode(Replay(after_seq=-5))], "bad_request"),
    ]


def test_malformed_frames_get_error_replies_and_the_daemon_keeps_serving(
        eventlog_proc: Any, paths: Paths, ctx: zmq.Context, client: EventlogClient) -> None:
    dealer = connect_dealer(ctx, paths.endpoint("events.ctl"))
    ping_ok(dealer)
    head_before = client.replay(0, limit=1).head_seq
    for label, frames, code in _hostile_frames():
        reply = raw_request(dealer, frames)
        assert isinstance(reply, ErrorReply), label
        assert reply.code == code, (label, reply)
        assert reply.message, label
        ping_ok(dealer)  # still answering
    assert eventlog_proc.proc.poll() is None
    # Nothing hostile was committed; real appends still work.
    assert client.replay(0, limit=1).head_seq == head_before
    assert client.append([turn(1)]).seqs == [head_before + 1]
    dealer.close(linger=0)


def test_garbage_pushed_to_events_in_is_counted_and_dropped(client: EventlogClient, rpc: RpcClient,
                                                            paths: Paths, ctx: zmq.Context) -> None:
    before = rpc.request(GetStats(request_id=new_id("s")))
    assert isinstance(before, LogStats)
    push = connect_push(ctx, paths.endpoint("events.in"))
    garbage = [
        os.urandom(100),
        b"",
        msgspec.msgpack.encode({"type": "drop_table"}),
        b"\x82\xa4type\xa4ping\xaarequest_id\xa2\xff\xfe",
        encode(Ping(request_id="x")),                     # valid, but not an append
        encode(Replay()),                                 # same
        encode(Append(events=[msgspec.structs.replace(turn(1), seq=3)])),
        encode(Append(events=[msgspec.structs.replace(turn(2), ts=float("nan"))])),
        encode(Ping(request_id="x")) + b"\x00" * (5 * 1024 * 1024),
    ]
    good = [turn(10), turn(11)]
    push.send(encode(Append(events=[good[0]])))
    for frame in garbage:
        push.send(frame)
    push.send(encode(Append(events=[good[1]])))  # after the garbage, from the same socket
    wait_head(rpc, before.head_seq + 2)

    after = rpc.request(GetStats(request_id=new_id("s")))
    assert after.dropped_frames == before.dropped_frames + len(garbage)
    assert after.head_seq == before.head_seq + 2
    tail = [ENVELOPE.decode(encode(e)) for e in client.replay(before.head_seq).events]
    assert [e.msg_id for e in tail] == [g.msg_id for g in good]
    assert client.append([turn(12)]).seqs == [before.head_seq + 3]
    push.close(linger=0)


def test_log_stats(client: EventlogClient, rpc: RpcClient) -> None:
    client.append([turn(1), turn(2), failure(3)])
    stats = rpc.request(GetStats(request_id=new_id("s")))
    assert stats.count == stats.head_seq == 4
    assert stats.by_type == {"service.started": 1, "chat.turn_completed": 2, "service.failed": 1}
    assert stats.db_bytes > 0 and stats.appends_total >= 4 and stats.commits_total >= 2
    assert stats.first_ts is not None and stats.last_ts >= stats.first_ts


# --------------------------------------------------------------------------- files and lifecycle


def test_run_directory_is_private(eventlog_proc: Any, paths: Paths) -> None:
    mode = stat.S_IMODE(paths.run.stat().st_mode)
    assert mode == 0o700, oct(mode)
    for name in ("events.in", "events.ctl", "events.pub"):
        assert stat.S_ISSOCK((paths.run / f"{name}.sock").stat().st_mode)
    assert (paths.run / "eventlog.lock").read_text().strip() == str(eventlog_proc.pid)


def test_second_instance_refuses_to_start(eventlog_proc: Any, paths: Paths) -> None:
    import subprocess
    import sys

    from services.common.paths import REPO_ROOT
    result = subprocess.run([sys.executable, "-m", "services.eventlog"], cwd=REPO_ROOT,
                            env={**os.environ, "CIRCADIAN_HOME": str(paths.home)},
                            capture_output=True, timeout=30)
    assert result.returncode == 1
    assert b"already" in result.stderr
    eventlog_proc.wait_ready(5)  # the first one is unharmed


def test_kill_9_loses_nothing_committed_and_seq_continues(eventlog_proc: Any, paths: Paths,
                                                          ctx: zmq.Context) -> None:
    client = EventlogClient(paths, timeout_s=10.0, ctx=ctx)
    acked: dict[str, int] = {}
    for i in range(30):
        env = turn(i)
        acked[env.msg_id] = client.append([env]).seqs[0]
    batch = [turn(100 + i) for i in range(50)]
    for env, seq in zip(batch, client.append(batch).seqs, strict=True):
        acked[env.msg_id] = seq
    # A burst in flight when the process dies: some of it may be lost (never
    # acknowledged), but what landed must be whole and gap-free.
    push = connect_push(ctx, paths.endpoint("events.in"))
    for i in range(3000):
        push.send(encode(Append(events=[turn(1000 + i)])))
    push.close(linger=0)
    last = turn(9999)
    acked[last.msg_id] = client.append([last]).seqs[0]
    assert eventlog_proc.kill() == -9
    client.close()

    conn = connect(paths.events_db, readonly=True)
    try:
        report = verify(conn)
    finally:
        conn.close()
    assert report.ok, report
    head_after_crash = report.head_seq

    eventlog_proc.start()
    client = EventlogClient(paths, timeout_s=10.0, ctx=ctx)
    try:
        events = replay_all(client)
        by_id = {e.msg_id: e.seq for e in events}
        assert {k: by_id.get(k) for k in acked} == acked  # every acknowledged event, same seq
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        restarted = events[head_after_crash]  # the new process announced itself next
        assert restarted.seq == head_after_crash + 1
        assert restarted.type == "service.started" and restarted.body.pid == eventlog_proc.pid
        reply = client.append([turn(5000), turn(5001)])
        assert reply.seqs == [head_after_crash + 2, head_after_crash + 3]
        assert client.append([last]).duplicates == [True]  # idempotence survived the crash
    finally:
        client.close()


def test_sigterm_exits_zero_after_committing(eventlog_proc: Any, paths: Paths, ctx: zmq.Context) -> None:
    client = EventlogClient(paths, timeout_s=10.0, ctx=ctx)
    reply = client.append([turn(1), turn(2)])
    client.close()
    assert eventlog_proc.terminate() == 0
    assert "eventlog.stopped" in eventlog_proc.log_text()
    conn = connect(paths.events_db, readonly=True)
    try:
        report = verify(conn)
    finally:
        conn.close()
    assert report.ok and report.head_seq == reply.seqs[-1] == 3
