"""Logged events: the facts the event log records, past tense, one Struct each.

Every event here may sit in ``data/events/events.db`` for years, so the
evolution rules are strict: add fields only with defaults, never change a
field's type or a default, never rename or reuse a tag. Golden samples of
each type live in ``tests/golden/`` and must keep decoding.
"""

from __future__ import annotations

from typing import Union

import msgspec


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of all events; ``type`` on the wire is the event's tag."""


class ChatTurnCompleted(_Event, tag="chat.turn_completed"):
    """One user message and the assistant's full reply.

    Sender: chat, after the reply finished (or was cancelled or hit the token
    limit). Consumers: ingest (memory), trainer (datasets), audits.
    Guarantee: chat reports a turn as complete to its client only after the
    eventlog has committed this event; ``request_id`` is the client's id, so
    a resent request is logged once (its ``msg_id`` derives from it).
    """

    session_id: str
    turn_index: int
    user_text: str
    assistant_text: str
    model: str
    adapter_id: str | None = None
    request_id: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    finish_reason: str = "stop"  # stop | length | cancelled
    system_prompt: str | None = None


class ServiceStarted(_Event, tag="service.started"):
    """A daemon finished starting and is ready to serve.

    Sender: every daemon, once per start. Consumers: ``circ status``, audits
    (a restart after ``kill -9`` shows up as a second start).
    """

    service: str
    pid: int
    version: str = ""
    details: dict[str, str] = {}


class ServiceFailed(_Event, tag="service.failed"):
    """A daemon hit a fatal error and is exiting non-zero for supervisord.

    Sender: the failing daemon, best effort (the log may itself be down).
    """

    service: str
    pid: int
    error: str
    detail: str = ""


class AdapterReloaded(_Event, tag="adapter.reloaded"):
    """chat switched the adapter it serves (or loaded one at start).

    Sender: chat, after the swap, between requests. ``adapter_id`` None means
    chat now serves the base model alone.
    """

    adapter_id: str | None
    previous_id: str | None = None
    reload_ms: float = 0.0
    reason: str = "startup"


Event = Union[ChatTurnCompleted, ServiceStarted, ServiceFailed, AdapterReloaded]

EVENT_TYPES: tuple[type, ...] = Event.__args__  # type: ignore[attr-defined]


def event_tag(cls_or_obj: object) -> str:
    """The wire tag (``type``) of an event class or instance."""
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    return cls.__struct_config__.tag  # type: ignore[attr-defined]


EVENT_TAGS: frozenset[str] = frozenset(event_tag(c) for c in EVENT_TYPES)
