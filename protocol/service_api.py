"""Requests every daemon's control socket answers, and the common replies.

A control socket is a ZeroMQ ROUTER; clients connect a DEALER and send one
msgpack frame per request. Every reply carries the ``request_id`` it answers.
Failures travel as data: :class:`ErrorReply`, never a silent drop.
"""

from __future__ import annotations

import msgspec


# msgspec applies kw_only only to the fields a class itself defines (frozen is
# inherited): every subclass repeats kw_only=True.
class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class Ping(_Msg, tag="ping", kw_only=True):
    """Ask a daemon whether it is up and ready. Any client may send it."""

    request_id: str = ""


class Pong(_Msg, tag="pong", kw_only=True):
    """Reply to :class:`Ping`: who answered and how it is doing.

    ``ready`` is False while the daemon is still starting (chat loading its
    model); ``details`` holds service-specific figures as strings.
    """

    request_id: str
    service: str
    pid: int
    ready: bool
    started_at: float
    version: str = ""
    details: dict[str, str] = {}


class ErrorReply(_Msg, tag="error", kw_only=True):
    """A request failed. ``code`` is machine-readable, ``message`` says what to do.

    Codes: ``malformed`` (undecodable frame), ``too_large``, ``bad_request``
    (valid frame, invalid values), ``unavailable`` (a dependency is down),
    ``busy``, ``cancelled``, ``internal``, ``disk_full`` (the event log's
    filesystem is out of space: nothing of the request was logged; the
    message names the directory to free; resend once there is space).
    """

    code: str
    message: str
    request_id: str = ""
