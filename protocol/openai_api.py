"""The api service: its control socket and the HTTP request bodies it accepts.

``api`` (services/api) serves an OpenAI-compatible HTTP API and is a client
of chat over :mod:`protocol.chat_api`. Its ROUTER ``api.ctl`` answers only
:class:`~protocol.service_api.Ping` (``circ up``/``status``/``doctor``); the
Pong's details carry ``url`` (where it listens) and ``auth`` (``token`` or
``loopback``).

The request Structs below are the subset of OpenAI's
``POST /v1/chat/completions`` body that circadian reads. Sender: any HTTP
client (untrusted). Consumer: api, which decodes the body with these types
(unknown fields are ignored, as OpenAI clients send many optional ones),
then checks values and roles itself; anything wrong gets a 400 in OpenAI's
error shape naming the field, and never reaches chat.
"""

from __future__ import annotations

from typing import Union

import msgspec

from protocol.service_api import ErrorReply, Ping, Pong

ApiRequest = Union[Ping]
ApiReply = Union[Pong, ErrorReply]


class ContentPart(msgspec.Struct, frozen=True, kw_only=True):
    """One part of a message's content list; only ``{"type": "text"}`` parts are served."""

    type: str
    text: str | None = None


class ChatMessageIn(msgspec.Struct, frozen=True, kw_only=True):
    """One message of the resent conversation. Roles: system, developer, user, assistant."""

    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(msgspec.Struct, frozen=True, kw_only=True):
    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /v1/chat/completions``: the whole conversation, the last message the user's."""

    messages: list[ChatMessageIn]
    model: str = ""
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    # The newer name of max_tokens; either may be sent.
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    n: int = 1
