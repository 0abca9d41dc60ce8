"""Conversation files dropped into ``data/inbox/`` (or given to `circ import`).

Format: JSON lines, one conversation per line, as logged by earlier
nightly-fine-tuning tools: ``{"messages": [{"role": "system"|"user"|"assistant",
"content": "..."}]}``. Each user message followed by an assistant message is
one turn. A file is validated completely before anything is imported: a bad
line rejects the whole file, so nothing half-imported remains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec

from protocol.chat_api import MAX_MESSAGE_CHARS

MAX_FILE_BYTES = 64 * 1024 * 1024


class InboxError(ValueError):
    """The file cannot be imported; the message says which line and why."""


class Message(msgspec.Struct, frozen=True):
    role: str
    content: str


class Conversation(msgspec.Struct, frozen=True):
    messages: list[Message]


@dataclass(frozen=True)
class ImportedTurn:
    conversation: int  # line number (1-based) of the conversation in the file
    turn_index: int
    user_text: str
    assistant_text: str
    system_prompt: str | None


_decoder = msgspec.json.Decoder(Conversation)


def parse_conversations(data: bytes, name: str = "file") -> list[ImportedTurn]:
    """All turns of a JSON-lines conversation file, or InboxError."""
    if len(data) > MAX_FILE_BYTES:
        raise InboxError(f"{name} is {len(data)} bytes; the limit is {MAX_FILE_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InboxError(f"{name} is not UTF-8 text (byte {exc.start}); export it as UTF-8 JSON lines") from None
    turns: list[ImportedTurn] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            conversation = _decoder.decode(line)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise InboxError(f"{name} line {number}: not a conversation ({exc}); "
                             'expected {"messages": [{"role": ..., "content": ...}]}') from None
        turns.extend(_turns_of(conversation, number, name))
    if not turns:
        raise InboxError(f"{name} holds no user/assistant turns")
    return turns


def _turns_of(conversation: Conversation, number: int, name: str) -> list[ImportedTurn]:
    system: str | None = None
    pending_user: str | None = None
    turns: list[ImportedTurn] = []
    for message in conversation.messages:
        if len(message.content) > MAX_MESSAGE_CHARS:
            raise InboxError(f"{name} line {number}: a message has {len(message.content)} characters; "
                             f"the limit is {MAX_MESSAGE_CHARS}")
        if "\x00" in message.content:
            raise InboxError(f"{name} line {number}: a message contains NUL bytes (binary content?)")
        match message.role:
            case "system":
                system = message.content
            case "user":
                pending_user = message.content if pending_user is None else f"{pending_user}\n{message.content}"
            case "assistant":
                if pending_user is not None:
                    turns.append(ImportedTurn(number, len(turns), pending_user, message.content, system))
                    pending_user = None
            case "tool" | "function":
                continue
            case other:
                raise InboxError(f"{name} line {number}: unknown role {other!r}; use system, user or assistant")
    return turns


def read_inbox_file(path: Path) -> tuple[bytes, list[ImportedTurn]]:
    data = path.read_bytes()
    return data, parse_conversations(data, path.name)
