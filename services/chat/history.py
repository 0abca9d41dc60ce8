"""Rebuild a session's conversation from the event log.

chat keeps sessions in memory; after a restart (or an LRU eviction) a client
continuing ``--session ID`` must get the same context and the next turn
index. The log has every turn, so chat replays ``chat.turn_completed`` and
keeps that session's turns. This is a scan of the chat turns, which replays
at tens of thousands of events per second; an index by session belongs to a
later change if logs grow large.
"""

from __future__ import annotations

import zmq

from protocol.events import ChatTurnCompleted, event_tag
from services.common.eventlog_client import EventlogClient
from services.common.logging import get_logger
from services.common.paths import Paths
from services.common.rpc import RemoteError, ServiceUnavailable
from services.lib.eventstore.replay import client_pager, logged_envelopes

log = get_logger("chat.history")
TURN_TYPE = event_tag(ChatTurnCompleted)


class LogHistory:
    def __init__(self, paths: Paths, ctx: zmq.Context) -> None:
        self._client = EventlogClient(paths, ctx=ctx)

    def __call__(self, session_id: str) -> list[tuple[str, str]]:
        turns: dict[int, tuple[str, str]] = {}
        try:
            for env in logged_envelopes(client_pager(self._client), [TURN_TYPE], page=500):
                body = env.body
                if isinstance(body, ChatTurnCompleted) and body.session_id == session_id:
                    turns[body.turn_index] = (body.user_text, body.assistant_text)
        except (ServiceUnavailable, RemoteError) as exc:
            # Without the log we cannot know the history: answer as a new
            # session rather than not at all, and say so in our log.
            log.warning("chat.history_unavailable", session_id=session_id, error=str(exc))
        return [turns[i] for i in sorted(turns)]
