"""Per-session conversation state: messages plus the KV cache that matches them.

A session's cache holds exactly ``tokens`` (the conversation as the model has
seen it). A follow-up turn re-renders the whole conversation with the chat
template, keeps the longest common token prefix with ``tokens``, trims the
cache to it, and feeds only the rest — so turn 8 costs its own new tokens,
not the whole history again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Session:
    session_id: str
    system_prompt: str
    messages: list[dict[str, str]] = field(default_factory=list)  # user/assistant, alternating
    tokens: list[int] = field(default_factory=list)  # what the cache holds
    cache: Any = None  # list of mlx-lm cache objects, or None before the first turn
    turn_index: int = 0  # index of the next turn
    last_used: float = field(default_factory=time.monotonic)

    def reset_cache(self) -> None:
        self.cache = None
        self.tokens = []


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SessionTable:
    """Live sessions, least-recently-used evicted first (KV caches cost memory)."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max(1, max_sessions)
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is not None:
            self._sessions.move_to_end(session_id)
            session.last_used = time.monotonic()
        return session

    def put(self, session: Session) -> None:
        self._sessions[session.session_id] = session
        self._sessions.move_to_end(session.session_id)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    def drop_caches(self) -> None:
        """Forget every KV cache (after an adapter swap they no longer match)."""
        for session in self._sessions.values():
            session.reset_cache()

    def __len__(self) -> int:
        return len(self._sessions)
