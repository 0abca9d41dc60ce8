"""One request loop for every daemon's ROUTER control socket.

Every daemon answers requests the same way: take ``[identity, frame]`` off
its ROUTER, decode the frame with the channel's typed :class:`Codec`,
dispatch the request to a handler, send the reply back to that identity.
:class:`RouterServer` is that loop, once:

- a frame that is not exactly one part, or that does not decode, gets an
  :class:`ErrorReply` (``malformed``/``too_large``) saying what to send
  instead; a handler that raises gets an ``internal`` ErrorReply. Neither
  ever reaches the daemon's loop as an exception.
- one structlog line per handled message, ``<service>.handled``, with the
  request's ``type``, ``status`` (``ok``, ``error``, ``rejected``,
  ``deferred``), ``duration_ms``, the reply type and error code, and with
  ``request_id``/``msg_id``/``seq`` bound (structlog contextvars) while the
  handler runs, so every line the handler logs carries them too.

A handler is ``handler(request, origin) -> reply``. ``origin`` is the
client's ROUTER identity, for handlers that answer later from another
thread (chat streams a turn; the evaluator judges on its MLX thread): they
return ``None`` (logged as ``deferred``), and the thread that owns the
socket sends the reply to ``origin`` when it comes (:meth:`send_raw`).
:class:`LocalClient` drives the same handler in process, with no socket,
through the ``request()`` interface RpcClient offers over ZeroMQ.

Daemons with a loop of their own (the eventlog drains PULL and ROUTER into
one group commit) use the pieces: :meth:`decode`, :meth:`handle`,
:meth:`finish`, :meth:`send`, or :meth:`handle_frames` (frames in, reply
frames out). Those without call :meth:`drain` from their poll loop, or
:meth:`serve`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
import zmq

from protocol.codec import Codec, ProtocolError, encode
from protocol.service_api import ErrorReply
from services.common.logging import get_logger
from services.common.rpc import RemoteError

Handler = Callable[[Any, bytes], Any]
Context = Callable[[Any], dict[str, Any]]

# Attributes bound to the log context when a request has them (non-empty).
CONTEXT_FIELDS = ("request_id", "msg_id", "seq", "session_id")


@dataclass(slots=True)
class Incoming:
    """One decoded request and where it came from; ``received_at`` is perf_counter seconds."""

    origin: bytes
    request: Any
    received_at: float


def request_context(request: Any) -> dict[str, Any]:
    """The fields of ``request`` worth binding to every log line about it."""
    context: dict[str, Any] = {}
    for name in CONTEXT_FIELDS:
        value = getattr(request, name, None)
        if value is not None and value != "":
            context[name] = value
    return context


def _reply_fields(reply: Any) -> dict[str, Any]:
    """What the reply adds to the summary line: its type, error code, the seq(s) it names."""
    if reply is None:
        return {}
    fields: dict[str, Any] = {"reply": type(reply).__name__}
    if isinstance(reply, ErrorReply):
        fields["code"] = reply.code
    seq = getattr(reply, "seq", None)
    seqs = getattr(reply, "seqs", None)
    if isinstance(seq, int):
        fields["seq"] = seq
    elif seqs:
        fields["seq"] = seqs[0]
        if len(seqs) > 1:
            fields["events"] = len(seqs)
    return fields


class RouterServer:
    """Decode, dispatch, reply and log for one ROUTER socket (owned by one thread).

    ``hint`` completes the error text a client gets for a bad frame ("send a
    request from protocol.chat_api"). ``level`` is the level of the summary
    line for answered requests (the eventlog logs its appends at debug: a
    line per append would cost more than the append). ``context`` picks
    what to bind per request (default: :func:`request_context`).
    """

    def __init__(self, service: str, sock: zmq.Socket, codec: Codec[Any], handler: Handler | None = None,
                 *, hint: str, level: int = logging.INFO, context: Context = request_context,
                 on_reject: Callable[[ErrorReply], None] | None = None) -> None:
        self.service = service
        self.sock = sock
        self.codec = codec
        self.handler = handler
        self.hint = hint
        self.level = level
        self.context = context
        self.on_reject = on_reject
        self.log = get_logger(service)
        self._stdlib = logging.getLogger(service)
        self._event = f"{service}.handled"

    # -- the pieces -------------------------------------------------------------
    def decode(self, frames: list[bytes]) -> Incoming | None:
        """The request in ``frames``; a bad frame is answered here (and logged) and gives None."""
        incoming = self._decode(frames)
        if isinstance(incoming, ErrorReply):
            self.send(frames[0], incoming)
            return None
        return incoming

    def _decode(self, frames: list[bytes]) -> Incoming | ErrorReply:
        received_at = time.perf_counter()
        origin = frames[0]
        if len(frames) != 2:
            return self._reject(origin, received_at,
                                ErrorReply(code="malformed", message="send exactly one frame per request"))
        try:
            request = self.codec.decode(frames[1])
        except ProtocolError as exc:
            return self._reject(origin, received_at, ErrorReply(code=exc.code, message=f"{exc}; {self.hint}"))
        return Incoming(origin, request, received_at)

    def handle(self, incoming: Incoming) -> Any:
        """Run the handler on one request, log its line, return the reply (None: answered later)."""
        request = incoming.request
        with structlog.contextvars.bound_contextvars(**self.context(request)):
            try:
                reply = self.handler(request, incoming.origin)  # type: ignore[misc]
            except Exception as exc:  # one bad request must not take the daemon down
                reply = ErrorReply(code="internal", request_id=getattr(request, "request_id", "") or "",
                                   message=f"{self.service} failed to answer: {type(exc).__name__}: {exc}")
                self._summary(logging.ERROR, incoming, reply, "error", exc_info=True)
                return reply
            self._summary(self.level, incoming, reply, self._status(reply))
        return reply

    def finish(self, incoming: Incoming, reply: Any) -> bool:
        """Log and send the reply to a request answered outside :meth:`handle` (a group commit)."""
        with structlog.contextvars.bound_contextvars(**self.context(incoming.request)):
            self._summary(self.level, incoming, reply, self._status(reply))
        return self.send(incoming.origin, reply)

    def handle_frames(self, frames: list[bytes]) -> list[bytes] | None:
        """Frames in, reply frames out (None: nothing to send now); sends nothing itself."""
        incoming = self._decode(frames)
        reply = incoming if isinstance(incoming, ErrorReply) else self.handle(incoming)
        if reply is None:
            return None
        return [frames[0], self._encode(reply)]

    def send(self, origin: bytes, reply: Any) -> bool:
        return self.send_raw(origin, self._encode(reply))

    def _encode(self, reply: Any) -> bytes:
        try:
            return encode(reply)
        except Exception as exc:  # a reply that cannot be encoded is our bug, not a reason to stop serving
            self.log.error(f"{self.service}.reply_unencodable", reply=type(reply).__name__, error=str(exc))
            request_id = getattr(reply, "request_id", "")
            return encode(ErrorReply(code="internal", request_id=request_id if isinstance(request_id, str) else "",
                                     message=f"{self.service} could not encode its reply: {exc}"))

    def send_raw(self, origin: bytes, frame: bytes) -> bool:
        """Send one encoded reply; False if the client is gone (ROUTER_MANDATORY) or stuck."""
        try:
            self.sock.send_multipart([origin, frame])
            return True
        except zmq.ZMQError as exc:  # the peer's loss, not ours
            self.log.info(f"{self.service}.reply_undeliverable", error=str(exc))
            return False

    # -- loops --------------------------------------------------------------------
    def drain(self, max_messages: int | None = None) -> int:
        """Handle every request already waiting (up to ``max_messages``); how many were taken."""
        taken = 0
        while max_messages is None or taken < max_messages:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            taken += 1
            out = self.handle_frames(frames)
            if out is not None:
                self.send_raw(out[0], out[1])
        return taken

    def serve(self, stop: Callable[[], bool], *, poll_timeout_ms: int = 200,
              on_tick: Callable[[], None] | None = None) -> None:
        """Answer requests until ``stop()``; ``on_tick`` runs after every poll (timers, housekeeping)."""
        while not stop():
            if self.sock.poll(poll_timeout_ms, zmq.POLLIN):
                self.drain()
            if on_tick is not None:
                on_tick()

    # -- logging ------------------------------------------------------------------
    @staticmethod
    def _status(reply: Any) -> str:
        if reply is None:
            return "deferred"
        return "error" if isinstance(reply, ErrorReply) else "ok"

    def _reject(self, origin: bytes, received_at: float, reply: ErrorReply) -> ErrorReply:
        if self.on_reject is not None:
            self.on_reject(reply)
        self._summary(logging.WARNING, Incoming(origin, None, received_at), reply, "rejected",
                      reason=reply.message)
        return reply

    def _summary(self, level: int, incoming: Incoming, reply: Any, status: str, **extra: Any) -> None:
        if not self._stdlib.isEnabledFor(level):
            return  # the eventlog's hot path: no event dict built for a line nobody keeps
        request = incoming.request
        self.log.log(level, self._event, type=type(request).__name__ if request is not None else "frame",
                     status=status, duration_ms=round((time.perf_counter() - incoming.received_at) * 1000, 3),
                     **_reply_fields(reply), **extra)


class LocalClient:
    """:class:`~services.common.rpc.RpcClient`'s ``request`` against a handler in this process.

    The request and the reply cross msgpack exactly as on the wire (the same codecs, the
    same RouterServer dispatch, log line and error handling), only no socket: a core is
    driven in process through the interface its clients use, and an ErrorReply raises
    RemoteError as it would over ZeroMQ. For request/reply handlers: a deferred request
    (None from the handler) raises :class:`LookupError`, since nothing will answer it here.
    """

    ORIGIN = b"local"

    def __init__(self, service: str, request_type: Any, reply_type: Any, handler: Handler) -> None:
        self._server = RouterServer(service, None, Codec(request_type), handler,  # type: ignore[arg-type]
                                    hint=f"send a request {service} understands")
        self._replies: Codec[Any] = Codec(reply_type)

    def request(self, request: Any, *, timeout_s: float | None = None) -> Any:
        out = self._server.handle_frames([self.ORIGIN, encode(request)])
        if out is None:
            raise LookupError(f"{type(request).__name__} is answered later, not by a local request()")
        reply = self._replies.decode(out[1])
        if isinstance(reply, ErrorReply):
            raise RemoteError(reply)
        return reply

    def close(self) -> None:
        pass
