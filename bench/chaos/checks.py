"""After the chaos: what the log, memory and process table must say, checked from the outside.

Each check returns plain numbers (and a few examples of what was wrong) for
the result JSON; none raises on a finding.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

from protocol.envelope import new_id
from protocol.ingest_api import GetMemoryStats, IngestReply, ListMemories, Recall
from services.common.paths import Paths
from services.common.rpc import RemoteError, RpcClient, ServiceUnavailable

from .load import SUBJECTS, LoadTally

DECISIONS = ("memory.stored", "memory.skipped", "memory.failed")
TURN = "chat.turn_completed"
EXAMPLES = 5  # how many examples of a finding go into the result


def read_log(paths: Paths) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{paths.events_db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT seq, event_id, type, body FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [{"seq": s, "event_id": e, "type": t, "body": msgspec.msgpack.decode(b)} for s, e, t, b in rows]


def turns_check(events: list[dict[str, Any]], load: LoadTally) -> dict[str, Any]:
    """Every turn a client saw complete (chat or import) is in the log exactly once, as it was told."""
    logged: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e["type"] == TURN:
            logged.setdefault(e["body"]["request_id"], []).append(e)
    lost, altered = [], []
    for turn in load.completed:
        rows = logged.get(turn.request_id, [])
        if not any(r["seq"] == turn.seq for r in rows):
            lost.append(f"{turn.request_id} (told seq {turn.seq}, logged at {[r['seq'] for r in rows]})")
            continue
        body = next(r for r in rows if r["seq"] == turn.seq)["body"]
        if not body.get("erased") and (body["user_text"], body["assistant_text"]) != (turn.text, turn.assistant_text):
            altered.append(f"{turn.request_id} at seq {turn.seq}")
    imported = 0
    for sha24, n in load.imports.items():
        for position in range(n):
            imported += 1
            if f"imp-{sha24}-{position}" not in logged:
                lost.append(f"imported turn imp-{sha24}-{position}")
    doubled = {rid: [r["seq"] for r in rows] for rid, rows in logged.items() if len(rows) > 1}
    return {"completed_checked": len(load.completed) + imported, "lost": len(lost), "doubled": len(doubled),
            "altered": len(altered), "lost_examples": lost[:EXAMPLES],
            "doubled_examples": [f"{rid} at seqs {seqs}" for rid, seqs in list(doubled.items())[:EXAMPLES]],
            "altered_examples": altered[:EXAMPLES]}


def seq_check(events: list[dict[str, Any]]) -> dict[str, Any]:
    seqs = [e["seq"] for e in events]
    gaps = sorted(set(range(1, (seqs[-1] if seqs else 0) + 1)) - set(seqs))
    return {"events": len(seqs), "seq_gaps": len(gaps), "seq_gap_examples": gaps[:EXAMPLES]}


def decisions_check(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Every logged turn has exactly one of memory.stored / skipped / failed naming its seq."""
    turns = {e["seq"] for e in events if e["type"] == TURN}
    per_turn = Counter(e["body"]["turn_seq"] for e in events if e["type"] in DECISIONS)
    undecided = sorted(turns - set(per_turn))
    twice = sorted(seq for seq, n in per_turn.items() if n > 1)
    kinds = Counter(e["type"] for e in events if e["type"] in DECISIONS)
    return {"turns_logged": len(turns), "decisions": dict(kinds), "undecided": len(undecided),
            "decided_twice": len(twice), "undecided_examples": undecided[:EXAMPLES],
            "decided_twice_examples": twice[:EXAMPLES]}


def _ingest(paths: Paths, request: Any, timeout_s: float = 30.0) -> Any:
    client = RpcClient(paths, "ingest", "ingest.ctl", IngestReply, timeout_s=timeout_s)
    try:
        return client.request(request)
    finally:
        client.close()


def ingest_cursor(paths: Paths) -> int:
    try:
        return _ingest(paths, GetMemoryStats(request_id=new_id("c")), timeout_s=5.0).cursor_seq
    except (ServiceUnavailable, RemoteError):
        return -1


def wait_caught_up(paths: Paths, seq: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ingest_cursor(paths) >= seq:
            return True
        time.sleep(0.5)
    return False


def memories(paths: Paths) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = _ingest(paths, ListMemories(limit=500, offset=len(out), request_id=new_id("l")))
        if not page.memories:
            return out
        out += [msgspec.structs.asdict(m) for m in page.memories]


def recalls(paths: Paths) -> dict[str, list[str]]:
    return {q: [m.memory_id for m in _ingest(paths, Recall(query=q, k=8, request_id=new_id("q"))).memories]
            for q in SUBJECTS}


def index_check(paths: Paths, circ: Any, last_turn_seq: int, timeout_s: float) -> dict[str, Any]:
    """The live index equals one rebuilt from the log (`circ memory rebuild`): memories and recall answers."""
    before, before_recall = memories(paths), recalls(paths)
    started = time.monotonic()
    result = circ("memory", "rebuild")
    rebuild_s = round(time.monotonic() - started, 1)
    if result.returncode != 0:
        return {"index_mismatch": 1, "index_problem": f"circ memory rebuild failed: {result.stderr.strip()[-500:]}"}
    if not wait_caught_up(paths, last_turn_seq, timeout_s):
        return {"index_mismatch": 1, "index_problem": "ingest did not come back after the rebuild"}
    after, after_recall = memories(paths), recalls(paths)
    b = {m["memory_id"]: m for m in before}
    a = {m["memory_id"]: m for m in after}
    differ = sorted(set(a) ^ set(b)) + sorted(i for i in set(a) & set(b) if _comparable(a[i]) != _comparable(b[i]))
    queries = [q for q in SUBJECTS if before_recall[q] != after_recall[q]]
    return {"memories": len(before), "index_mismatch": len(differ) + len(queries), "rebuild_s": rebuild_s,
            "index_mismatch_examples": differ[:EXAMPLES] + queries[:EXAMPLES]}


def _comparable(memory: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in memory.items() if k != "ts"} | {"ts": round(memory["ts"], 3)}


def forget_check(events: list[dict[str, Any]], load: LoadTally, live: list[dict[str, Any]]) -> dict[str, Any]:
    """A completed forget left no memory with its marker, and erased the turn's text in the log."""
    done = {marker for marker, n in load.forgets.items() if n > 0}
    left = [m["memory_id"] for m in live if not m.get("forgotten") and any(k in m["text"] for k in done)]
    by_seq = {e["seq"]: e for e in events if e["type"] == TURN}
    unerased = [t.request_id for t in load.completed if t.marker in done
                and not by_seq.get(t.seq, {}).get("body", {}).get("erased")]
    return {"forget_leftovers": len(left) + len(unerased), "forget_leftover_examples": (left + unerased)[:EXAMPLES]}


def log_verify(circ: Any) -> dict[str, Any]:
    result = circ("log", "verify")
    return {"log_verify": result.returncode == 0, "log_verify_said": (result.stdout or result.stderr).strip()[-300:]}


def orphans(home: Path, exclude: set[int], wait_s: float = 10.0) -> list[str]:
    """Processes still referencing the scratch home after `circ down` (given a few seconds to exit)."""
    from .procs import ours

    deadline = time.monotonic() + wait_s
    while True:
        left = ours(home, exclude)
        if not left or time.monotonic() > deadline:
            return [f"{pid} {cmd}" for pid, cmd in left]
        time.sleep(0.5)


def run_cli(env: dict[str, str], circ_path: Path, timeout_s: float) -> Any:
    def circ(*args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([str(circ_path), *args], env=env, capture_output=True, text=True,
                                  timeout=timeout_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", f"timed out after {timeout_s:g} s")
    return circ
