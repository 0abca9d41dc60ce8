"""ZeroMQ socket construction with the project's safety settings.

Every socket gets an explicit linger; connecting sockets get a send timeout;
servers refuse absurd frames at the transport (our codec refuses anything over
MAX_FRAME_BYTES with an error reply first, this is only a memory guard).
Endpoints are ipc:// files in the private run directory; nothing is bound to
TCP unless an operator asks for it.
"""

from __future__ import annotations

import zmq

from protocol.codec import MAX_FRAME_BYTES

# Transport-level cap: frames above this are dropped by libzmq itself.
TRANSPORT_MAX_BYTES = 16 * MAX_FRAME_BYTES
LINGER_MS = 200
SEND_TIMEOUT_MS = 2000


def bind_router(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    # Raise EHOSTUNREACH for a peer that went away instead of silently
    # dropping: chat uses it to cancel generation for a disconnected client.
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
    sock.setsockopt(zmq.MAXMSGSIZE, TRANSPORT_MAX_BYTES)
    sock.bind(endpoint)
    return sock


def bind_pull(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.setsockopt(zmq.MAXMSGSIZE, TRANSPORT_MAX_BYTES)
    sock.bind(endpoint)
    return sock


def bind_pub(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)  # a doorbell: nothing to flush on exit
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.bind(endpoint)
    return sock


def connect_dealer(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
    sock.setsockopt(zmq.IMMEDIATE, 1)  # don't queue for a peer that isn't there
    sock.connect(endpoint)
    return sock


def connect_push(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
    sock.connect(endpoint)
    return sock


def connect_sub(ctx: zmq.Context, endpoint: str, topics: list[str]) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    for topic in topics or [""]:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sock.connect(endpoint)
    return sock


def endpoint_path(endpoint: str) -> str:
    """The filesystem path behind an ipc:// endpoint."""
    return endpoint.removeprefix("ipc://")
