"""RouterServer, the one request loop of every daemon's control socket, over a
real ROUTER and DEALER on ipc in a private temp directory (no daemon process).

Each test drives the server from the test's own thread (``drain`` after a
poll, or ``serve`` with a stop condition), so the ROUTER never crosses
threads. Every receive has a timeout.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import structlog
import zmq

from protocol.codec import MAX_FRAME_BYTES, Codec, encode
from protocol.eventlog_api import EventlogReply, EventlogRequest, GetStats, Replay
from protocol.service_api import ErrorReply, Ping, Pong
from services.common.daemon import Readiness
from services.common.logging import configure_logging
from services.common.paths import Paths
from services.common.router import LocalClient, RouterServer
from services.common.rpc import RemoteError
from services.common.zmqio import bind_router, connect_dealer

pytestmark = pytest.mark.timeout(60)

RECV_TIMEOUT_MS = 5000
REPLY: Codec[Any] = Codec(EventlogReply)


class Service:
    """A stand-in policy: Ping answers, GetStats raises, Replay is answered later."""

    def __init__(self) -> None:
        self.readiness = Readiness("test")
        self.deferred: list[tuple[bytes, Replay]] = []
        self.handled = 0

    def handle(self, request: Any, origin: bytes) -> Any:
        self.handled += 1
        structlog.get_logger("test").info("test.inside_handler")
        match request:
            case Ping(request_id=rid):
                return self.readiness.pong(rid)
            case GetStats():
                raise RuntimeError("the disk caught fire")
            case Replay():
                self.deferred.append((origin, request))
                return None
        return ErrorReply(code="bad_request", message="unsupported")


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The JSON log lines written while the test runs (logging restored afterwards)."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_config = structlog.get_config()
    configure_logging("test", "info", json=True)
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        yield stream
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.configure(**saved_config)
        structlog.contextvars.clear_contextvars()


@pytest.fixture
def service() -> Service:
    return Service()


@pytest.fixture
def server(paths: Paths, ctx: zmq.Context, service: Service) -> Iterator[RouterServer]:
    sock = bind_router(ctx, paths.endpoint("test.ctl"))
    yield RouterServer("test", sock, Codec(EventlogRequest), service.handle,
                       hint="send a request from protocol.eventlog_api")
    sock.close(linger=0)


@pytest.fixture
def dealer(paths: Paths, ctx: zmq.Context, server: RouterServer) -> Iterator[zmq.Socket]:
    sock = connect_dealer(ctx, paths.endpoint("test.ctl"))
    yield sock
    sock.close(linger=0)


def pump(server: RouterServer, expected: int = 1) -> None:
    """Let the server take ``expected`` messages (each waited for with a timeout)."""
    taken = 0
    while taken < expected:
        assert server.sock.poll(RECV_TIMEOUT_MS, zmq.POLLIN), "the request never reached the ROUTER"
        taken += server.drain()


def reply_of(dealer: zmq.Socket) -> Any:
    assert dealer.poll(RECV_TIMEOUT_MS, zmq.POLLIN), f"no reply within {RECV_TIMEOUT_MS} ms"
    return REPLY.decode(dealer.recv())


def handled_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [line for line in lines if line.get("event") == "test.handled"]


def test_a_request_gets_the_handlers_reply(server: RouterServer, dealer: zmq.Socket) -> None:
    """Ping in, the handler's Pong out, to the client that asked."""
    dealer.send(encode(Ping(request_id="r-1")))
    pump(server)
    reply = reply_of(dealer)
    assert isinstance(reply, Pong) and reply.request_id == "r-1" and reply.service == "test"


@pytest.mark.parametrize("frames, code", [
    ([b"\xc1"], "malformed"),  # 0xc1 is never valid msgpack
    ([encode({"type": "no_such_request"})], "malformed"),
    ([encode(Ping()), encode(Ping())], "malformed"),  # two frames in one message
    ([b"\x00" * (MAX_FRAME_BYTES + 1)], "too_large"),
])
def test_a_bad_frame_gets_a_typed_error_and_the_loop_keeps_serving(
        server: RouterServer, dealer: zmq.Socket, service: Service, frames: list[bytes], code: str) -> None:
    """Garbage never reaches the handler: it gets an ErrorReply saying what to send, and the
    next good request is answered as usual."""
    dealer.send_multipart(frames)
    pump(server)
    error = reply_of(dealer)
    assert isinstance(error, ErrorReply) and error.code == code
    assert "send" in error.message and service.handled == 0
    dealer.send(encode(Ping(request_id="after")))
    pump(server)
    assert isinstance(reply_of(dealer), Pong)


def test_a_handler_that_raises_becomes_an_internal_error_reply(
        server: RouterServer, dealer: zmq.Socket) -> None:
    """The exception is answered as ErrorReply(internal) with the request's id; serving goes on."""
    dealer.send(encode(GetStats(request_id="r-boom")))
    pump(server)
    error = reply_of(dealer)
    assert isinstance(error, ErrorReply) and error.code == "internal" and error.request_id == "r-boom"
    assert "the disk caught fire" in error.message
    dealer.send(encode(Ping(request_id="r-2")))
    pump(server)
    assert reply_of(dealer).request_id == "r-2"


def test_a_deferred_request_is_answered_later_to_its_origin(
        server: RouterServer, dealer: zmq.Socket, service: Service) -> None:
    """A handler that returns None sends nothing now; its reply, sent later to the origin it
    was given, reaches the client that asked."""
    dealer.send(encode(Replay(request_id="r-later")))
    pump(server)
    assert not dealer.poll(200, zmq.POLLIN), "a deferred request must not be answered at once"
    origin, request = service.deferred[0]
    assert server.send(origin, ErrorReply(code="busy", request_id=request.request_id, message="later"))
    assert reply_of(dealer).request_id == "r-later"


def test_one_summary_line_per_message_with_the_request_bound(
        server: RouterServer, dealer: zmq.Socket, log_lines: io.StringIO) -> None:
    """Each handled message logs one ``<service>.handled`` line with type, status and
    duration_ms; the request_id is bound, so the handler's own lines carry it too."""
    dealer.send(encode(Ping(request_id="r-ok")))
    dealer.send(encode(GetStats(request_id="r-err")))
    dealer.send(b"\xc1")
    dealer.send(encode(Replay(request_id="r-def")))
    pump(server, 4)
    lines = handled_lines(log_lines)
    assert [(line["type"], line["status"]) for line in lines] == [
        ("Ping", "ok"), ("GetStats", "error"), ("frame", "rejected"), ("Replay", "deferred")]
    assert [line.get("request_id") for line in lines] == ["r-ok", "r-err", None, "r-def"]
    assert all(isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0 for line in lines)
    assert lines[1]["code"] == "internal" and "the disk caught fire" in lines[1]["exception"]
    inside = [json.loads(line) for line in log_lines.getvalue().splitlines() if "test.inside_handler" in line]
    assert [line["request_id"] for line in inside] == ["r-ok", "r-err", "r-def"]
    dealer.send(encode(Ping()))  # nothing stays bound between messages
    pump(server)
    assert "request_id" not in handled_lines(log_lines)[-1]


def test_handle_frames_is_frames_in_reply_frames_out(server: RouterServer, service: Service) -> None:
    """The piece a daemon with its own poll loop calls: it returns the reply frames and sends nothing."""
    out = server.handle_frames([b"client-1", encode(Ping(request_id="r-3"))])
    assert out is not None and out[0] == b"client-1"
    assert msgspec.msgpack.decode(out[1])["request_id"] == "r-3"
    assert server.handle_frames([b"client-1", encode(Replay())]) is None
    assert service.handled == 2


def test_serve_answers_until_stopped_and_ticks(server: RouterServer, dealer: zmq.Socket,
                                               service: Service) -> None:
    """The plain loop for daemons without one of their own: answers, runs on_tick, stops."""
    ticks: list[int] = []
    dealer.send(encode(Ping(request_id="r-serve")))
    server.serve(lambda: service.handled >= 1 and len(ticks) >= 1, poll_timeout_ms=50,
                 on_tick=lambda: ticks.append(1))
    assert reply_of(dealer).request_id == "r-serve" and ticks


def test_a_local_client_drives_the_handler_as_a_remote_one_would(service: Service) -> None:
    """LocalClient: the same request()/RemoteError interface as RpcClient, the same codecs
    and dispatch, no socket."""
    client = LocalClient("test", EventlogRequest, EventlogReply, service.handle)
    pong = client.request(Ping(request_id="r-local"))
    assert isinstance(pong, Pong) and pong.request_id == "r-local"
    with pytest.raises(RemoteError) as failed:
        client.request(GetStats(request_id="r-boom"))
    assert failed.value.code == "internal" and failed.value.reply.request_id == "r-boom"
    with pytest.raises(RemoteError) as refused:
        client.request(Pong(request_id="x", service="s", pid=1, ready=True, started_at=0.0))
    assert refused.value.code == "malformed"  # not a request of this channel: the codec refuses it
    with pytest.raises(LookupError):
        client.request(Replay(request_id="r-later"))


def test_a_reply_that_cannot_be_encoded_is_an_internal_error(server: RouterServer, dealer: zmq.Socket) -> None:
    """A handler bug in the reply (something msgpack cannot hold) still answers, and serving goes on."""
    def broken(request: Any, origin: bytes) -> Pong:
        return Pong(request_id=request.request_id, service="test", pid=1, ready=True, started_at=0.0,
                    details={"oops": object()})  # type: ignore[dict-item]

    server.handler = broken
    dealer.send(encode(Ping(request_id="r-enc")))
    pump(server)
    error = reply_of(dealer)
    assert isinstance(error, ErrorReply) and error.code == "internal" and "encode" in error.message
    assert error.request_id == "r-enc"
    server.handler = Service().handle
    dealer.send(encode(Ping(request_id="r-after")))
    pump(server)
    assert isinstance(reply_of(dealer), Pong)
