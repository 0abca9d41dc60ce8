"""One chat turn, driven from a worker thread, its replies handed to the event loop.

:class:`~services.common.chat_client.ChatClient` is blocking ZeroMQ (one
socket per thread); the HTTP server is asyncio. Each request gets a thread
that runs the client and posts every reply (or the exception) into an
asyncio queue, then ``None``. Cancelling sends CancelChat on a socket of its
own at once (chat cancels by request id, whoever sends it), so a client that
hangs up stops generation even while its turn is still queued in chat.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import zmq

from protocol.chat_api import CancelChat
from protocol.codec import encode
from protocol.envelope import new_id
from services.api.requests import Turn
from services.common.chat_client import ChatClient
from services.common.logging import get_logger
from services.common.paths import Paths
from services.common.zmqio import connect_dealer

log = get_logger("api.bridge")
CANCEL_LINGER_MS = 1000


class ChatCall:
    def __init__(self, paths: Paths, turn: Turn, session_id: str | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.paths = paths
        self.turn = turn
        self.session_id = session_id
        self.loop = loop
        self.request_id = new_id("api")
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.finished = False  # ChatFinished (or an error) has been handed over
        self._thread = threading.Thread(target=self._run, name=f"chat-{self.request_id}", daemon=True)

    def start(self) -> ChatCall:
        self._thread.start()
        return self

    async def next(self) -> Any:
        """The next reply (ChatStarted, ChatDelta, ChatFinished), an exception, or None at the end."""
        return await self.queue.get()

    def cancel(self) -> None:
        if self.finished or self.cancelled.is_set():
            return
        self.cancelled.set()
        threading.Thread(target=self._send_cancel, name="cancel", daemon=True).start()

    def _send_cancel(self) -> None:
        ctx = zmq.Context.instance()
        try:
            sock = connect_dealer(ctx, self.paths.endpoint("chat.ctl"))
        except zmq.ZMQError:
            return
        try:
            sock.send(encode(CancelChat(request_id=self.request_id)))
        except zmq.ZMQError as exc:  # chat is gone: nothing is generating
            log.info("api.cancel_not_sent", request_id=self.request_id, error=str(exc))
        finally:
            sock.close(linger=CANCEL_LINGER_MS)
        log.info("api.cancelled", request_id=self.request_id)

    def _post(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop closed (shutdown): nobody is listening
            pass

    def _run(self) -> None:
        turn = self.turn
        client = ChatClient(self.paths)
        resent = False
        try:
            for reply in client.send(turn.message, session_id=self.session_id, request_id=self.request_id,
                                     max_tokens=turn.max_tokens, temperature=turn.temperature,
                                     top_p=turn.top_p, system_prompt=turn.system_prompt,
                                     stop=list(turn.stop), history=turn.history_messages()):
                self._post(reply)
                if self.cancelled.is_set() and not resent:
                    # The first cancel may have reached chat before our request did.
                    client.cancel(self.request_id)
                    resent = True
        except Exception as exc:  # RemoteError, ServiceUnavailable, or a bug: the client hears of it
            self._post(exc)
        finally:
            client.close()
            self._post(None)
