"""A long, idempotent request that survives its daemon being restarted while it waits.

A request in flight when its daemon dies (kill -9, a crash) dies with it: the
restarted daemon never heard of it, and a plain :meth:`RpcClient.request`
would wait its whole timeout (minutes, for `circ import`) for a reply that
cannot come. Found by `circ bench chaos`: a `circ import` sent to an ingest
being killed waited 300 s.

So the wait is cut into slices; between slices the daemon is pinged on a
second connection, and when another process answers than the one that was
asked (a new pid or start time), or the daemon was not answering at all when
the request was sent and now is, the same request is sent again. Only for
requests the daemon handles idempotently (an import is keyed by the file's
sha256): a resend that reaches a daemon which had already done the work
changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from protocol.service_api import Pong
from services.common.rpc import RemoteError, RpcClient, ServiceUnavailable

SLICE_S = 2.0


def _who(pong: Pong | None) -> tuple[int, float] | None:
    return (pong.pid, pong.started_at) if pong is not None else None


def request_resending(client: RpcClient, request: Any, *, ping: Callable[[], Pong | None],
                      timeout_s: float, slice_s: float = SLICE_S) -> Any:
    """Send ``request`` and return its reply, resending it to a restarted daemon.

    ``ping`` returns the daemon's Pong or None (not answering; it must not
    raise). Raises ServiceUnavailable after ``timeout_s`` without a reply,
    RemoteError for an ErrorReply.
    """
    deadline = time.monotonic() + timeout_s
    asked = _who(ping())
    _send(client, request, deadline)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            client.reset()
            raise ServiceUnavailable(f"{client.service} service gave no reply within {timeout_s:g} s")
        try:
            reply = client.poll_reply(request.request_id, min(slice_s, remaining))
        except ServiceUnavailable:  # its socket file went away: it is restarting
            reply = None
            client.reset()
        if reply is not None:
            return reply
        now = _who(ping())
        if now is not None and now != asked:  # someone else answers now: ours was lost with the old one
            client.reset()
            asked = now
            _send(client, request, deadline)


def _send(client: RpcClient, request: Any, deadline: float) -> None:
    """Send, waiting for the socket to come back if the daemon is between two lives."""
    while True:
        try:
            client.send(request)
            return
        except ServiceUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


__all__ = ["RemoteError", "request_resending"]
