"""From an HTTP body to what chat is asked: decode, check, map roles.

Every check names the field and says what is allowed, so a client author can
fix the request from the message alone. Nothing here talks to chat: a body
that fails any check never disturbs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from protocol.chat_api import MAX_MESSAGE_CHARS, MAX_STOP, MAX_STOP_CHARS, HistoryMessage
from protocol.openai_api import ChatCompletionRequest, ChatMessageIn
from services.common.config import ApiConfig

MAX_MESSAGES = 2000
_DECODER = msgspec.json.Decoder(ChatCompletionRequest)


class BadRequest(ValueError):
    """A 4xx: ``status``, OpenAI's error ``type`` and ``param`` go into the error body."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400,
                 code: str | None = None, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code
        self.type = type_


@dataclass(frozen=True)
class Turn:
    """One request, checked: the new user message and the conversation before it."""

    message: str
    history: tuple[tuple[str, str], ...]  # (role, content), user/assistant only
    system_prompt: str | None
    stream: bool
    include_usage: bool
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    stop: tuple[str, ...]
    user: str | None
    model: str

    def history_messages(self) -> list[HistoryMessage]:
        return [HistoryMessage(role=role, content=content) for role, content in self.history]  # type: ignore[arg-type]


def decode(body: bytes) -> ChatCompletionRequest:
    try:
        return _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request body: {exc}", param=_param_of(str(exc))) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON ({exc}); send a JSON object with `messages`") from None


def _param_of(error: str) -> str | None:
    # msgspec says "... - at `$.messages[0].role`": OpenAI's `param` is that path.
    marker = "at `$."
    return error.split(marker, 1)[1].rstrip("`") if marker in error else None


def _text(message: ChatMessageIn, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise BadRequest(f"messages[{index}].content[{j}] is a {part.type!r} part; only text parts are "
                             "served (this model reads text only)", param=f"messages[{index}].content")
        parts.append(part.text)
    return "".join(parts)


def check(req: ChatCompletionRequest, config: ApiConfig) -> Turn:
    if not req.messages:
        raise BadRequest("`messages` is empty; send at least one user message", param="messages")
    if len(req.messages) > MAX_MESSAGES:
        raise BadRequest(f"`messages` has {len(req.messages)} entries; the limit is {MAX_MESSAGES}", param="messages")
    if req.n != 1:
        raise BadRequest("only n=1 is supported (one choice per request)", param="n")
    system: list[str] = []
    convo: list[tuple[str, str]] = []
    for i, message in enumerate(req.messages):
        text = _text(message, i)
        if message.role in ("system", "developer"):
            system.append(text)
        elif message.role in ("user", "assistant"):
            convo.append((message.role, text))
        else:
            raise BadRequest(f"messages[{i}].role is {message.role!r}; use system, developer, user or "
                             "assistant (tools are not supported)", param=f"messages[{i}].role")
    if not convo or convo[-1][0] != "user":
        raise BadRequest("the last non-system message must be the user's (role \"user\"): it is what gets "
                         "answered", param="messages")
    message = convo[-1][1]
    if not message.strip():
        raise BadRequest("the last user message is empty; say something", param="messages")
    if len(message) > MAX_MESSAGE_CHARS:
        raise BadRequest(f"the last user message has {len(message)} characters; the limit is {MAX_MESSAGE_CHARS}",
                         param="messages", code="context_length_exceeded")
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    if max_tokens is not None and not 1 <= max_tokens <= config.max_tokens:
        raise BadRequest(f"max_tokens must be 1..{config.max_tokens}, got {max_tokens}", param="max_tokens")
    if req.temperature is not None and not 0.0 <= req.temperature <= 2.0:
        raise BadRequest(f"temperature must be 0..2, got {req.temperature}", param="temperature")
    if req.top_p is not None and not 0.0 < req.top_p <= 1.0:
        raise BadRequest(f"top_p must be in (0, 1], got {req.top_p}", param="top_p")
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    if len(stop) > MAX_STOP or any(not 1 <= len(s) <= MAX_STOP_CHARS for s in stop):
        raise BadRequest(f"stop: at most {MAX_STOP} sequences of 1..{MAX_STOP_CHARS} characters", param="stop")
    if req.user is not None and len(req.user) > 256:
        raise BadRequest("user must be at most 256 characters", param="user")
    return Turn(message=message, history=tuple(convo[:-1]),
                system_prompt="\n\n".join(system) if system else None, stream=req.stream,
                include_usage=bool(req.stream_options and req.stream_options.include_usage),
                max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, stop=stop,
                user=req.user, model=req.model)
