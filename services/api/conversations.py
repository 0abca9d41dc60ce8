"""Which chat session continues a resent conversation.

OpenAI clients resend the whole history with each request. After each answer
we remember "this exact conversation (system prompt + messages + the reply) is
session S". A request whose history is such a conversation continues S, so
chat's KV cache for S is reused and only the new message is prefilled; any
other history starts a new session seeded with it (correct, just not cached).
A key is claimed once: two requests resending the same history (a
"regenerate") never append to the same session.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import msgspec


def conversation_key(system_prompt: str | None, messages: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> str:
    # Whitespace at the ends of a message is not meaning, and some front-ends trim it.
    canonical = [system_prompt or "", [[role, content.strip()] for role, content in messages]]
    return hashlib.sha256(msgspec.json.encode(canonical)).hexdigest()


class Conversations:
    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._sessions: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, system_prompt: str | None, history: tuple[tuple[str, str], ...]) -> str | None:
        """The session whose conversation is exactly ``history``, or None; it is taken."""
        if not history:
            return None
        with self._lock:
            return self._sessions.pop(conversation_key(system_prompt, history), None)

    def remember(self, system_prompt: str | None, conversation: list[tuple[str, str]], session_id: str) -> None:
        with self._lock:
            self._sessions[conversation_key(system_prompt, conversation)] = session_id
            while len(self._sessions) > self.max_entries:
                self._sessions.popitem(last=False)
