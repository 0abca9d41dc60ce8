"""When the user last said something, followed from the log (for the idle sleep).

The trainer used to ask ``events.db`` for ``MAX(ts)`` with raw SQL; it now
follows ``chat.turn_completed`` through the common consumer like every other
reader of the log. The cursor and the last turn's time are one small file,
written together, so a restarted trainer knows how long the user has been
idle without replaying the log from the start.
"""

from __future__ import annotations

import json
from pathlib import Path

import zmq

from protocol.envelope import Envelope
from protocol.events import ChatTurnCompleted, event_tag
from services.common.atomic import write_atomic
from services.common.consumer import EventConsumer
from services.common.paths import Paths


class LastTurnCursor:
    """The consumer's cursor, and the wall-clock time of the newest turn (by seq) it has seen."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ts: float | None = None

    def load(self) -> int:
        try:
            state = json.loads(self.path.read_text())
            seq, ts = int(state["seq"]), state.get("ts")
        except (OSError, ValueError, KeyError, TypeError):
            return 0  # missing or torn: follow the log from the start again (cheap, and correct)
        self.ts = float(ts) if isinstance(ts, int | float) else None
        return max(0, seq)

    def store(self, seq: int) -> None:
        write_atomic(self.path, json.dumps({"seq": seq, "ts": self.ts}).encode())

    def saw(self, env: Envelope) -> None:
        # The newest turn by seq (the consumer hands them over in seq order), not the largest ts:
        # after the clock was set back, a later turn carries an earlier ts, and the largest would
        # hide it (the user would look idle since before they last spoke, and a spell already
        # slept would never end: tests/test_faults.py).
        self.ts = env.ts


class LastTurn:
    def __init__(self, paths: Paths, *, ctx: zmq.Context | None = None) -> None:
        self.cursor = LastTurnCursor(paths.state / "trainer-last-turn.json")
        self.consumer = EventConsumer(paths, "trainer-last-turn", [event_tag(ChatTurnCompleted)], self.cursor.saw,
                                      ctx=ctx, cursor=self.cursor)

    def ts(self) -> float | None:
        """The newest turn's time after catching up with the log (raises ServiceUnavailable)."""
        self.consumer.drain_doorbell()  # never polled: one catch-up answers every broadcast
        self.consumer.catch_up()
        return self.cursor.ts

    def close(self) -> None:
        self.consumer.close()
