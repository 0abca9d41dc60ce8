"""Hostile frames on every socket: error replies or counted drops, never a crash.

To the ROUTER sockets (``events.ctl``, ``chat.ctl``) we send random bytes,
msgpack of the wrong types, unknown tags, invalid UTF-8 inside a string
field, multi-frame messages and a 5 MiB frame: each gets an ErrorReply. To
the PULL socket ``events.in`` the same frames are dropped and counted
(``GetStats.dropped_frames``). After each, the daemon still answers a good
request, with the same pid (supervisord did not have to restart it); at the
end a real chat turn is logged and published on ``events.pub``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import zmq

from protocol.chat_api import ChatReply
from protocol.codec import MAX_FRAME_BYTES, Codec, encode
from protocol.envelope import Envelope, new_envelope
from protocol.eventlog_api import Append, EventlogReply, GetStats, LogStats
from protocol.events import ServiceStarted
from protocol.service_api import ErrorReply, Ping, Pong
from services.cli.chat_client import ChatClient
from services.common.rpc import RpcClient, fresh_request_id
from services.common.zmqio import connect_dealer, connect_push, connect_sub

from .harness import TURN_TYPE, Instance, wait_until

pytestmark = pytest.mark.e2e

REPLY_TIMEOUT_MS = 10_000
OVERSIZED_BYTES = 5 * 1024 * 1024
ROUTERS = {"events.ctl": ("eventlog", EventlogReply), "chat.ctl": ("chat", ChatReply)}


def _bad_utf8(message: dict[str, Any], marker: str) -> bytes:
    """msgpack of ``message`` with the string ``marker`` replaced by invalid UTF-8 of the same length."""
    frame = msgspec.msgpack.encode(message)
    raw = marker.encode()
    assert frame.count(raw) == 1
    return frame.replace(raw, b"\xff\xfe" * (len(raw) // 2) + b"\xc3" * (len(raw) % 2))


def _random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _oversized() -> bytes:
    # Valid msgpack all the way (a ping whose request_id is 5 MiB): only the size is wrong.
    frame = encode(Ping(request_id="x" * OVERSIZED_BYTES))
    assert len(frame) > MAX_FRAME_BYTES
    return frame


# name -> socket -> list of frames making ONE message (multi-part when longer than one)
def _cases(socket: str) -> dict[str, list[bytes]]:
    wrong_types = {
        "events.ctl": {"type": "replay", "after_seq": "zero", "limit": [1]},
        "events.in": {"type": "append", "events": [{"msg_id": 7, "ts": "now", "source": None}]},
        "chat.ctl": {"type": "send_message", "request_id": "r1", "message": 42},
    }[socket]
    bad_utf8 = {
        "events.ctl": _bad_utf8({"type": "ping", "request_id": "MARKMARK"}, "MARKMARK"),
        "events.in": _bad_utf8(msgspec.to_builtins(Append(events=[_envelope("MARKMARK")])), "MARKMARK"),
        "chat.ctl": _bad_utf8({"type": "send_message", "request_id": "r2", "message": "MARKMARK"},
                              "MARKMARK"),
    }[socket]
    return {
        "random_bytes": [_random_bytes(1, 64)],
        "random_bytes_long": [_random_bytes(2, 70_000)],
        "empty_frame": [b""],
        "msgpack_int": [encode(42)],
        "msgpack_list": [encode([1, "two", 3.0])],
        "msgpack_map_without_tag": [encode({"request_id": "x"})],
        "wrong_field_types": [encode(wrong_types)],
        "unknown_tag": [encode({"type": "launch_missiles", "request_id": "x"})],
        "invalid_utf8_in_string": [bad_utf8],
        "deep_nesting": [b"\x91" * 200_000 + b"\xc0"],
        "truncated_msgpack": [encode(Ping(request_id="r" * 40))[:-5]],
        "multi_frame": [encode(Ping(request_id="mf")), b"extra frame"],
        "oversized_5MiB": [_oversized()],
    }


def _envelope(msg_id: str) -> Envelope:
    return new_envelope(ServiceStarted(service="malformed-test", pid=1), source="test", msg_id=msg_id)


CASE_NAMES = list(_cases("events.ctl"))


@pytest.fixture(scope="module")
def baseline(instance: Instance) -> dict[str, Pong]:
    """Each daemon's identity (pid, start time) before any abuse."""
    return {name: instance.wait_ready(name, timeout_s=30) for name in ("eventlog", "chat")}


@pytest.fixture(scope="module")
def subscriber(instance: Instance, ctx: zmq.Context) -> Iterator[zmq.Socket]:
    """A SUB on events.pub connected before the abuse starts (PUB: nothing to send it)."""
    sock = connect_sub(ctx, instance.paths.endpoint("events.pub"), [TURN_TYPE])
    yield sock
    sock.close(linger=0)


def _assert_same_daemon(instance: Instance, name: str, baseline: dict[str, Pong]) -> None:
    pong = instance.wait_ready(name, timeout_s=10)
    assert (pong.pid, pong.started_at) == (baseline[name].pid, baseline[name].started_at), \
        f"{name} restarted (pid {baseline[name].pid} -> {pong.pid})\n{instance.logs()}"
    assert instance.pid(name) == baseline[name].pid


def _test_events(instance: Instance) -> list[str]:
    """Events this module sent itself (other daemons, e.g. ingest, may append meanwhile)."""
    return [e["event_id"] for e in instance.events() if e["source"] == "test"]


def _dropped_frames(instance: Instance) -> int:
    client = RpcClient(instance.paths, "eventlog", "events.ctl", EventlogReply, timeout_s=5)
    try:
        stats = client.request(GetStats(request_id=fresh_request_id()))
    finally:
        client.close()
    assert isinstance(stats, LogStats)
    return stats.dropped_frames


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("socket", list(ROUTERS))
def test_router_answers_bad_frame_with_error_reply(instance: Instance, baseline: dict[str, Pong],
                                                   subscriber: zmq.Socket, ctx: zmq.Context,
                                                   socket: str, case: str) -> None:
    """A ROUTER answers a bad frame with an ErrorReply and keeps serving, same process."""
    service, reply_type = ROUTERS[socket]
    frames = _cases(socket)[case]
    dealer = connect_dealer(ctx, instance.paths.endpoint(socket))
    try:
        dealer.send_multipart(frames)
        assert dealer.poll(REPLY_TIMEOUT_MS, zmq.POLLIN), f"{socket} sent no reply to {case}"
        reply = Codec(reply_type).decode(dealer.recv())
        assert isinstance(reply, ErrorReply), f"{socket} answered {case} with {reply!r}"
        expected = "too_large" if case == "oversized_5MiB" else "malformed"
        assert reply.code == expected, reply
        assert reply.message
        # The same connection still gets a good answer.
        dealer.send(encode(Ping(request_id="after-" + case)))
        assert dealer.poll(REPLY_TIMEOUT_MS, zmq.POLLIN)
        pong = Codec(reply_type).decode(dealer.recv())
        assert isinstance(pong, Pong) and pong.request_id == "after-" + case
    finally:
        dealer.close(linger=0)
    _assert_same_daemon(instance, service, baseline)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_events_in_drops_and_counts_bad_frame(instance: Instance, baseline: dict[str, Pong],
                                              subscriber: zmq.Socket, ctx: zmq.Context, case: str) -> None:
    """events.in (PULL, no replies) drops a bad frame, counts it, and keeps appending."""
    before = _dropped_frames(instance)
    ours_before = _test_events(instance)
    push = connect_push(ctx, instance.paths.endpoint("events.in"))
    try:
        push.send_multipart(_cases("events.in")[case])
    finally:
        push.close(linger=5000)
    wait_until(lambda: _dropped_frames(instance) > before, 10, f"events.in to count the dropped {case}")
    assert _dropped_frames(instance) == before + 1, "one bad message must count as one drop"
    # Nothing from the bad message reached the log.
    assert _test_events(instance) == ours_before
    _assert_same_daemon(instance, "eventlog", baseline)


def test_events_in_drops_a_valid_append_with_an_extra_frame(instance: Instance, baseline: dict[str, Pong],
                                                            ctx: zmq.Context) -> None:
    """A multi-part message is malformed as a whole: its valid-looking first part is not appended."""
    msg_id = "multi-part-" + fresh_request_id()
    before = _dropped_frames(instance)
    push = connect_push(ctx, instance.paths.endpoint("events.in"))
    try:
        push.send_multipart([encode(Append(events=[_envelope(msg_id)])), b"trailing junk"])
    finally:
        push.close(linger=5000)
    wait_until(lambda: _dropped_frames(instance) > before, 10, "events.in to count the dropped message")
    assert msg_id not in {e["event_id"] for e in instance.events()}
    _assert_same_daemon(instance, "eventlog", baseline)


def test_events_in_still_appends_good_frames(instance: Instance, baseline: dict[str, Pong],
                                             ctx: zmq.Context) -> None:
    """After all that, a valid PUSHed append is committed."""
    msg_id = "good-" + fresh_request_id()
    push = connect_push(ctx, instance.paths.endpoint("events.in"))
    try:
        push.send(encode(Append(events=[_envelope(msg_id)])))
    finally:
        push.close(linger=5000)
    wait_until(lambda: msg_id in {e["event_id"] for e in instance.events()}, 10, "the good append")
    _assert_same_daemon(instance, "eventlog", baseline)


def test_chat_still_answers_a_real_turn(instance: Instance, baseline: dict[str, Pong],
                                        subscriber: zmq.Socket) -> None:
    """After the abuse: a real turn is generated, logged, and published on events.pub."""
    client = ChatClient(instance.paths, max_wait_s=120)
    try:
        final = client.complete("Say hello.", max_tokens=4)
    finally:
        client.close()
    assert final.turn.assistant_text
    logged = [e for e in instance.events(TURN_TYPE) if e["body"]["request_id"] == final.request_id]
    assert [e["seq"] for e in logged] == [final.seq]
    published = []
    while subscriber.poll(REPLY_TIMEOUT_MS if not published else 0, zmq.POLLIN):
        topic, frame = subscriber.recv_multipart()
        published.append(Codec(Envelope).decode(frame))
        if published[-1].seq == final.seq:
            break
    assert final.seq in [env.seq for env in published], "the turn was not published on events.pub"
    for name in ("eventlog", "chat"):
        _assert_same_daemon(instance, name, baseline)
