"""A client for chat's control socket, shared by circ-chat, the api service, tests and benchmarks.

Waiting for a reply never hangs on a dead daemon: while it waits, the client
pings chat on a second connection every few seconds, and gives up with
:class:`ServiceUnavailable` as soon as chat stops answering.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import zmq

from protocol.chat_api import CancelChat, ChatFinished, ChatReply, HistoryMessage, SendMessage
from protocol.codec import Codec, ProtocolError, encode
from protocol.envelope import new_id
from protocol.service_api import ErrorReply, Ping, Pong
from services.common.paths import Paths
from services.common.rpc import HOW_TO_START, RemoteError, RpcClient, ServiceUnavailable
from services.common.zmqio import connect_dealer, endpoint_path

LIVENESS_INTERVAL_S = 3.0


class ChatClient:
    def __init__(self, paths: Paths, *, ctx: zmq.Context | None = None, max_wait_s: float = 600.0) -> None:
        self.paths = paths
        self.ctx = ctx or zmq.Context.instance()
        self.endpoint = paths.endpoint("chat.ctl")
        self.max_wait_s = max_wait_s
        self._codec: Codec[Any] = Codec(ChatReply)
        self._pinger = RpcClient(paths, "chat", "chat.ctl", ChatReply, timeout_s=3.0, ctx=self.ctx)
        self._sock: zmq.Socket | None = None

    def close(self) -> None:
        self._pinger.close()
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def ping(self) -> Pong:
        """Pong from chat, or ServiceUnavailable with what to do."""
        reply = self._pinger.request(Ping(request_id=new_id("p")))
        if not isinstance(reply, Pong):
            raise ServiceUnavailable(f"chat answered a ping with {type(reply).__name__}")
        return reply

    def wait_ready(self, timeout_s: float) -> Pong:
        deadline = time.monotonic() + timeout_s
        while True:
            pong = self.ping()
            if pong.ready:
                return pong
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"chat is up but still loading its model after {timeout_s:g} s")
            time.sleep(0.5)

    def _socket(self) -> zmq.Socket:
        if not __import__("os").path.exists(endpoint_path(self.endpoint)):
            raise ServiceUnavailable(f"chat service is not running: {HOW_TO_START}")
        if self._sock is None:
            self._sock = connect_dealer(self.ctx, self.endpoint)
        return self._sock

    def cancel(self, request_id: str) -> None:
        try:
            self._socket().send(encode(CancelChat(request_id=request_id)), zmq.NOBLOCK)
        except (zmq.ZMQError, ServiceUnavailable):
            pass

    def send(self, message: str, *, session_id: str | None = None, request_id: str | None = None,
             max_tokens: int | None = None, temperature: float | None = None,
             top_p: float | None = None, system_prompt: str | None = None,
             recall: bool = True, stop: list[str] | None = None,
             history: list[HistoryMessage] | None = None) -> Iterator[Any]:
        """Send a message; yield ChatStarted, ChatDelta..., and finally ChatFinished.

        Raises RemoteError for an ErrorReply and ServiceUnavailable if chat
        dies or stops answering while we wait.
        """
        request = SendMessage(request_id=request_id or new_id("r"), message=message,
                              session_id=session_id, max_tokens=max_tokens, temperature=temperature,
                              top_p=top_p, system_prompt=system_prompt, recall=recall,
                              stop=list(stop or []), history=list(history or []))
        # Who answers now: if chat restarts while we wait, our request died with it.
        boot = self.ping()
        sock = self._socket()
        try:
            sock.send(encode(request))
        except zmq.Again:
            self.close()
            raise ServiceUnavailable(f"chat service is not accepting requests: {HOW_TO_START}") from None
        yield from self.replies(request.request_id, boot)

    def replies(self, request_id: str, boot: Pong | None = None) -> Iterator[Any]:
        sock = self._socket()
        started = time.monotonic()
        while True:
            if not sock.poll(int(LIVENESS_INTERVAL_S * 1000), zmq.POLLIN):
                self._check_alive(started, boot)
                continue
            try:
                reply = self._codec.decode(sock.recv())
            except ProtocolError:
                continue
            if getattr(reply, "request_id", "") != request_id:
                continue  # a stale reply to an earlier, abandoned request
            if isinstance(reply, ErrorReply):
                raise RemoteError(reply)
            yield reply
            if isinstance(reply, ChatFinished):
                return

    def _check_alive(self, started: float, boot: Pong | None) -> None:
        if time.monotonic() - started > self.max_wait_s:
            self.close()
            raise ServiceUnavailable(f"chat gave no reply within {self.max_wait_s:g} s")
        try:
            pong = self.ping()
        except (ServiceUnavailable, RemoteError) as exc:
            self.close()
            raise ServiceUnavailable(f"chat stopped answering while we waited ({exc})") from None
        if boot is not None and (pong.pid, pong.started_at) != (boot.pid, boot.started_at):
            self.close()  # a restarted chat does not know our request: stop waiting
            raise ServiceUnavailable("chat restarted while answering; resend the message")

    def complete(self, message: str, **kwargs: Any) -> ChatFinished:
        """Send a message and return the final ChatFinished (no streaming)."""
        final = None
        for reply in self.send(message, **kwargs):
            final = reply
        assert isinstance(final, ChatFinished)
        return final
