"""The chat daemon's control socket (ROUTER ``chat.ctl``).

A client sends :class:`SendMessage`; chat answers with a stream on the same
connection: one :class:`ChatStarted`, any number of :class:`ChatDelta`, then
exactly one :class:`ChatFinished` or :class:`ErrorReply`. The client may send
:class:`CancelChat` at any time; if the client disconnects, chat cancels the
generation itself. Requests queue and run one at a time on the model thread.
"""

from __future__ import annotations

from typing import Literal, Union

import msgspec

from protocol.events import ChatTurnCompleted
from protocol.service_api import ErrorReply, Ping, Pong

# A chat message longer than this is refused with a clear error: the embedded
# model's context is 8k tokens and a bigger paste would only be truncated.
MAX_MESSAGE_CHARS = 32_000
MAX_STOP = 4
MAX_STOP_CHARS = 64


# msgspec applies kw_only only to the fields a class itself defines (frozen is
# inherited): every subclass repeats kw_only=True.
class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class HistoryMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One earlier message of a conversation, as a client holds it.

    Sent inside :class:`SendMessage` by clients that resend the whole
    conversation each time (the OpenAI-compatible ``api``).
    """

    role: Literal["user", "assistant"]
    content: str


class SendMessage(_Msg, tag="send_message", kw_only=True):
    """Send one user message and stream the reply.

    ``request_id`` is chosen by the client and makes a resend safe: the turn
    is logged once. ``session_id`` None starts a new session; an unknown id
    starts a session with that id. Unset sampling fields take chat's config.
    """

    request_id: str
    message: str
    session_id: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    system_prompt: str | None = None
    # Consult memory (ingest's recall) for this turn; chat's config decides
    # whether recall is on at all.
    recall: bool = True
    # Stop sequences: generation ends before the first of them appears; the
    # reply (streamed and logged) never contains it. At most MAX_STOP of
    # 1..MAX_STOP_CHARS characters each.
    stop: list[str] = []
    # The conversation so far, as the client holds it. When chat does not
    # hold ``session_id`` (or it is None), the new session starts from these
    # messages instead of the log's record; a session chat holds ignores them
    # (the client vouches that they are that session's turns). Only the new
    # message is logged as a turn.
    history: list[HistoryMessage] = []


class CancelChat(_Msg, tag="cancel_chat", kw_only=True):
    """Stop generating the reply to ``request_id``; the partial turn is logged."""

    request_id: str


class ChatStarted(_Msg, tag="chat_started", kw_only=True):
    """Generation began. ``turn_index`` counts from 0 within the session."""

    request_id: str
    session_id: str
    turn_index: int
    adapter_id: str | None = None


class ChatDelta(_Msg, tag="chat_delta", kw_only=True):
    """The next piece of the reply's text."""

    request_id: str
    text: str


class ChatFinished(_Msg, tag="chat_finished", kw_only=True):
    """The turn is complete and committed to the event log as ``seq``."""

    request_id: str
    seq: int
    turn: ChatTurnCompleted
    duplicate: bool = False


ChatRequest = Union[SendMessage, CancelChat, Ping]
ChatReply = Union[ChatStarted, ChatDelta, ChatFinished, Pong, ErrorReply]
