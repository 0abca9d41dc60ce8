"""Client side of a daemon's control socket: request/reply and streams.

A dead peer is a clear error within the timeout, never a hang: if the socket
file is missing we fail at once; otherwise each receive waits at most
``timeout_s``. Replies are matched by ``request_id`` so a late reply to an
earlier, timed-out request is discarded rather than misread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import zmq

from protocol.codec import Codec, ProtocolError, encode
from protocol.envelope import new_id
from protocol.service_api import ErrorReply
from services.common.paths import Paths
from services.common.zmqio import connect_dealer, endpoint_path

HOW_TO_START = "start it with `circ up`"


class ServiceUnavailable(ConnectionError):
    """The daemon is not running or did not answer in time."""


class RemoteError(RuntimeError):
    """The daemon answered with an :class:`ErrorReply`."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(f"{reply.message} ({reply.code})")
        self.code = reply.code
        self.reply = reply


class RpcClient:
    """A DEALER connected to one service's ROUTER (one thread only)."""

    def __init__(self, paths: Paths, service: str, socket_name: str, reply_type: Any,
                 *, timeout_s: float = 5.0, ctx: zmq.Context | None = None) -> None:
        self.service = service
        self.endpoint = paths.endpoint(socket_name)
        self.timeout_s = timeout_s
        self._codec: Codec[Any] = Codec(reply_type)
        self._ctx = ctx or zmq.Context.instance()
        self._sock: zmq.Socket | None = None

    def _unavailable(self, why: str) -> ServiceUnavailable:
        return ServiceUnavailable(f"{self.service} service is not running ({why}): {HOW_TO_START}")

    def _socket(self) -> zmq.Socket:
        if not os.path.exists(endpoint_path(self.endpoint)):
            raise self._unavailable("no socket at " + endpoint_path(self.endpoint))
        if self._sock is None:
            self._sock = connect_dealer(self._ctx, self.endpoint)
        return self._sock

    def reset(self) -> None:
        """Drop the connection (after a timeout the peer may have restarted)."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def close(self) -> None:
        self.reset()

    def send(self, request: Any) -> None:
        try:
            self._socket().send(encode(request))
        except zmq.Again:
            self.reset()
            raise self._unavailable("send timed out") from None

    def _recv(self, request_id: str, timeout_s: float) -> Any:
        sock = self._socket()
        deadline = time.monotonic() + timeout_s
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not sock.poll(remaining_ms, zmq.POLLIN):
                self.reset()
                raise self._unavailable(f"no reply within {timeout_s:g} s")
            try:
                reply = self._codec.decode(sock.recv())
            except ProtocolError:
                continue  # garbage from a confused peer: keep waiting for ours
            if getattr(reply, "request_id", request_id) in (request_id, ""):
                return reply

    def poll_reply(self, request_id: str, timeout_s: float) -> Any | None:
        """The reply to ``request_id`` if it comes within ``timeout_s``, else None; the
        connection is kept, so a long request can be waited for in slices (checking the
        peer between them). An ErrorReply raises RemoteError."""
        sock = self._socket()
        deadline = time.monotonic() + timeout_s
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not sock.poll(remaining_ms, zmq.POLLIN):
                return None
            try:
                reply = self._codec.decode(sock.recv())
            except ProtocolError:
                continue
            if getattr(reply, "request_id", request_id) in (request_id, ""):
                if isinstance(reply, ErrorReply):
                    raise RemoteError(reply)
                return reply

    def request(self, request: Any, *, timeout_s: float | None = None) -> Any:
        """Send one request, return its reply; ErrorReply raises RemoteError."""
        request_id = getattr(request, "request_id", "") or ""
        self.send(request)
        reply = self._recv(request_id, timeout_s or self.timeout_s)
        if isinstance(reply, ErrorReply):
            raise RemoteError(reply)
        return reply

    def stream(self, request: Any, *, first_timeout_s: float, idle_timeout_s: float,
               final_types: tuple[type, ...]) -> Iterator[Any]:
        """Send a request and yield replies until one of ``final_types`` (inclusive)."""
        request_id = request.request_id
        self.send(request)
        timeout = first_timeout_s
        while True:
            reply = self._recv(request_id, timeout)
            if isinstance(reply, ErrorReply):
                raise RemoteError(reply)
            yield reply
            if isinstance(reply, final_types):
                return
            timeout = idle_timeout_s


def fresh_request_id() -> str:
    return new_id("r")
