"""What the eventlog's integrity check at start costs: SQLite's quick_check over a log of N turns.

    .venv/bin/python bench/integrity_cost.py --turns 50000

Prints JSON: the file size, the check's time, and (the baseline, same run) the time of one
full read of every row, which `circ log verify` does anyway. Timings, not asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from protocol.envelope import new_envelope
from protocol.events import ChatTurnCompleted
from services.lib.eventstore.store import EventStore, integrity_problem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=50_000, help="turns in the log (~1 KB each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "events.db"
        store = EventStore(db)
        text = "The quick brown fox jumps over the lazy dog. " * 10
        for start in range(0, args.turns, 1000):
            store.append_batch([new_envelope(ChatTurnCompleted(
                session_id="s", turn_index=i, user_text=text, assistant_text=text, model="m"), source="chat")
                for i in range(start, min(start + 1000, args.turns))])
        conn = store._conn
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        t0 = time.perf_counter()
        problem = integrity_problem(conn)
        check_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        conn.execute("SELECT SUM(LENGTH(body)) FROM events").fetchone()
        scan_s = time.perf_counter() - t0
        store.close()
        print(json.dumps({"turns": args.turns, "db_mb": round(db.stat().st_size / 1e6, 1), "problem": problem,
                          "quick_check_s": round(check_s, 3), "full_scan_s": round(scan_s, 3),
                          "ratio_check_vs_scan": round(check_s / scan_s, 2)}))


if __name__ == "__main__":
    main()
