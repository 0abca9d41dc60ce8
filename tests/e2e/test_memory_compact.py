"""Issue 12, part 7, end to end: a long paste is chunked, `circ memory compact` merges a near duplicate.

Real daemons under supervisord (`circ up`), the real embedded model (greedy, 4 tokens), the
real CLI. A fact is told, then told again in other words in a new session: different enough
that ingest's live check (cosine 0.97) stores both, close enough for compact (0.90). A long
paste (appended to the log as chat would log it) becomes several chunks, each with the turn's
seq, timestamp and tags. Then:

1. `circ memory compact --dry-run` lists the pair and changes nothing;
2. `circ memory compact` logs one memory.merged and applies it: recall no longer returns the
   newer memory, `circ memory list` shows it as merged into the older one (still there);
3. `circ memory rebuild` (it stops ingest, rebuilds from the log, starts it again) gives the
   same memories, the same merged state and the same recall.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol.envelope import new_envelope
from protocol.events import ChatTurnCompleted
from services.common.eventlog_client import EventlogClient

from .harness import Instance, parse_json_lines, wait_until

pytestmark = pytest.mark.e2e

FACT = "My cousin Beatriz is getting married in Porto in September."
RESTATED = "Remember that my cousin Beatriz is getting married in Porto in September."
QUESTION = "where is Beatriz getting married?"
STORE_TIMEOUT_S = 120.0
REBUILD_TIMEOUT_S = 300.0
DECISIONS = ("memory.stored", "memory.skipped", "memory.failed")
PASTE = "Notes from the planning meeting:\n\n" + "\n\n".join(
    f"Item {n}: the {topic} work is owned by the {team} team, due in week {n + 10}, and the risk is "
    f"that {risk}. We agreed to review it again at the next planning meeting." for n, (topic, team, risk) in
    enumerate([("billing export", "payments", "the CSV format changes"),
               ("login outage follow-up", "identity", "the provider keeps changing its API"),
               ("canal survey", "field", "the water samples arrive late"),
               ("search latency", "platform", "the cache is too small"),
               ("onboarding redesign", "design", "the research results are late"),
               ("data warehouse move", "analytics", "the old reports break"),
               ("mobile release", "apps", "the store review takes longer"),
               ("office move", "facilities", "the lease is signed late")], start=1))


def _say(instance: Instance, message: str) -> dict[str, Any]:
    result = instance.chat("--json", "--temperature", "0", "--max-tokens", "4", "--message", message)
    assert result.returncode == 0, result.stderr
    [record] = parse_json_lines(result.stdout)
    return record


def _decision(instance: Instance, seq: int) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        found = [e for e in instance.events() if e["type"] in DECISIONS and e["body"]["turn_seq"] == seq]
        return found[0] if found else None
    return wait_until(find, STORE_TIMEOUT_S, f"ingest's decision on turn {seq}", interval_s=0.3)


def _memories(instance: Instance) -> list[dict[str, Any]]:
    result = instance.circ("memory", "list", "--json", "--limit", "500")
    assert result.returncode == 0, result.stderr
    return sorted(json.loads(result.stdout)["memories"], key=lambda m: m["memory_id"])


def _recall(instance: Instance, query: str) -> list[tuple[str, float]]:
    result = instance.circ("recall", query, "--json", "--k", "8")
    assert result.returncode == 0, result.stderr
    return [(m["memory_id"], m["score"]) for m in json.loads(result.stdout)["memories"]]


def test_long_paste_is_chunked_and_compact_merges_a_near_duplicate_that_survives_a_rebuild(
        instance: Instance) -> None:
    told, again = _say(instance, FACT), _say(instance, RESTATED)
    assert told["session_id"] != again["session_id"]
    fact_decision, again_decision = _decision(instance, told["seq"]), _decision(instance, again["seq"])
    assert fact_decision["type"] == again_decision["type"] == "memory.stored", (fact_decision, again_decision)
    [fact_id], [again_id] = fact_decision["body"]["memory_ids"], again_decision["body"]["memory_ids"]

    # A long paste, logged as chat logs a turn: several chunks, each with the turn's seq, ts and tags.
    assert len(PASTE) > 1500
    log = EventlogClient(instance.paths, timeout_s=10.0)
    try:
        body = ChatTurnCompleted(session_id="paste", turn_index=0, user_text=PASTE + "\n#no-train",
                                 assistant_text="Noted.", model="smollm2-135m-instruct")
        [paste_seq] = log.append([new_envelope(body, source="chat", msg_id="turn-compact-paste")], retry_s=30).seqs
    finally:
        log.close()
    paste_decision = _decision(instance, paste_seq)
    assert paste_decision["type"] == "memory.stored" and paste_decision["body"]["chunks"] >= 2, paste_decision
    chunks = [m for m in _memories(instance) if m["turn_seq"] == paste_seq]
    assert sorted(m["chunk"] for m in chunks) == list(range(paste_decision["body"]["chunks"]))
    assert all(m["tags"] == ["no-train"] and len(m["text"]) <= 1000 and m["text"] in PASTE for m in chunks), chunks
    assert len({m["ts"] for m in chunks}) == 1 and chunks[0]["ts"] > 0
    assert len({m["session_id"] for m in chunks}) == 1 and chunks[0]["session_id"] == "paste"

    recalled = [mid for mid, _ in _recall(instance, QUESTION)]
    assert fact_id in recalled and again_id in recalled, recalled  # both, before compacting

    # 1. A dry run lists the pair and changes nothing.
    dry = instance.circ("memory", "compact", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"keep {fact_id}" in dry.stdout and f"would merge {again_id}" in dry.stdout, dry.stdout
    assert instance.events("memory.merged") == []

    # 2. Compact: logged, then applied.
    done = instance.circ("memory", "compact")
    assert done.returncode == 0, done.stderr
    assert f"merged {again_id}" in done.stdout and "merged 1 memories into 1" in done.stderr, (done.stdout, done.stderr)
    [merged] = instance.events("memory.merged")
    assert merged["body"]["kept_id"] == fact_id and merged["body"]["merged_ids"] == [again_id], merged
    assert 0.90 <= merged["body"]["scores"][0] < 0.97, merged
    recalled = [mid for mid, _ in _recall(instance, QUESTION)]
    assert fact_id in recalled and again_id not in recalled, recalled
    listing = instance.circ("memory", "list")
    line = next(line for line in listing.stdout.splitlines() if line.startswith(again_id))
    assert f"(merged into {fact_id})" in line, listing.stdout
    exported = {m["memory_id"]: m for m in map(json.loads, instance.circ("memory", "export").stdout.splitlines())}
    assert exported[again_id]["state"] == "merged" and exported[fact_id]["state"] == "live"
    again_compact = instance.circ("memory", "compact")
    assert again_compact.returncode == 0 and "merged 0 memories" in again_compact.stderr, again_compact.stderr

    # 3. A rebuild from the log gives the same index.
    before_memories, before_recall = _memories(instance), _recall(instance, QUESTION)
    rebuilt = instance.circ("memory", "rebuild", timeout_s=REBUILD_TIMEOUT_S)
    assert rebuilt.returncode == 0, f"{rebuilt.stderr}\n{instance.logs()}"
    instance.wait_ready("ingest", timeout_s=120)
    assert _memories(instance) == before_memories
    after_recall = _recall(instance, QUESTION)
    assert [mid for mid, _ in after_recall] == [mid for mid, _ in before_recall]
    assert all(abs(a - b) < 1e-3 for (_, a), (_, b) in zip(after_recall, before_recall, strict=True))
    assert len(instance.events("memory.merged")) == 1  # the rebuild logged nothing again
