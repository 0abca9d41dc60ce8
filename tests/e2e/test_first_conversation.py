"""Issue 12, measured: a scripted first conversation, then questions in new sessions.

Real daemons under supervisord (`circ up`), the real embedded model (greedy,
few tokens), the real CLI. One session tells the assistant about the user,
with small talk and questions in between and one correction; every question
afterwards is asked in a new session (no `--session`), so recall is the only
way the answer can come back. The figures (correct, replies with a
placeholder, replies that take the user's fact as the model's own) are
printed as one JSON line (`-s` shows it) and reported in the README.

Asserted (the issue's "Done when"): the transcript's two questions are
answered correctly, no reply holds a placeholder, no question is stored,
"Priya" and "St. Olaf" are kept, the correction supersedes the old home and
"where do we live" is answered Bristol in recall, and `circ memory list`
says so.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from .harness import Instance, parse_json_lines, wait_until

pytestmark = pytest.mark.e2e

MAX_TOKENS = "32"
STORE_TIMEOUT_S = 120.0
DECISIONS = ("memory.stored", "memory.skipped", "memory.failed")

CONVERSATION = [  # (user turn, remembered?)
    ("Hi! My name is Priya and my dog is called Biscuit. I work as a nurse at St. Olaf hospital.", True),
    ("thanks!", False),
    ("What's a good name for a goldfish?", False),
    ("We live in Leeds.", True),
    ("Busy day. My aunt's birthday is July 9. Any film for tonight?", True),
    ("I'm allergic to peanuts.", True),
    ("How do I boil an egg?", False),
    ("Actually, we moved from Leeds to Bristol.", True),
]
QUESTIONS = [  # asked in new sessions: (question, what a right answer contains)
    ("What is my dog called?", "biscuit"),
    ("Where do I work?", "olaf"),
    ("What is my name?", "priya"),
    ("Where do we live?", "bristol"),
    ("When is my aunt's birthday?", "july 9"),
    ("What am I allergic to?", "peanut"),
]
_PLACEHOLDER = re.compile(r"\[[^\]\n]{1,40}\]")
_FIRST_PERSON = re.compile(r"\b(i|i'm|i am|my|me)\b", re.IGNORECASE)


def _say(instance: Instance, message: str, session: str | None = None) -> dict[str, Any]:
    args = ["--json", "--temperature", "0", "--max-tokens", MAX_TOKENS, "--message", message]
    result = instance.chat(*args, *(["--session", session] if session else []))
    assert result.returncode == 0, result.stderr
    [record] = parse_json_lines(result.stdout)
    return record


def _decision(instance: Instance, turn_seq: int) -> dict[str, Any] | None:
    found = [e for e in instance.events() if e["type"] in DECISIONS and e["body"]["turn_seq"] == turn_seq]
    return found[0] if found else None


def _first_person_about(reply: str, gold: str) -> bool:
    return any(gold in s.lower() and _FIRST_PERSON.search(s) for s in re.split(r"(?<=[.!?])\s+", reply))


def test_first_conversation_is_remembered_as_the_user_said_it(instance: Instance) -> None:
    first = _say(instance, CONVERSATION[0][0])
    session = first["session_id"]
    records = [first] + [_say(instance, text, session) for text, _ in CONVERSATION[1:]]
    decisions = [wait_until(lambda r=r: _decision(instance, r["seq"]), STORE_TIMEOUT_S,
                            f"ingest's decision on turn {r['seq']}", interval_s=0.3) for r in records]
    for (text, remembered), decision in zip(CONVERSATION, decisions, strict=True):
        assert (decision["type"] == "memory.stored") == remembered, (text, decision)
    leeds, bristol = decisions[3]["body"]["memory_ids"][0], decisions[7]["body"]["memory_ids"][0]
    assert decisions[7]["body"]["supersedes"] == [leeds], decisions[7]

    told = " ".join(json.loads(instance.circ("memory", "show", mid, "--json").stdout)["text"]
                    for mid in decisions[0]["body"]["memory_ids"])  # one memory per statement sentence
    assert "Priya" in told and "St. Olaf hospital" in told and "[NAME]" not in told, told
    aunt = json.loads(instance.circ("memory", "show", decisions[4]["body"]["memory_ids"][0], "--json").stdout)
    assert "July 9" in aunt["text"] and "film" not in aunt["text"], aunt
    listing = instance.circ("memory", "list")
    assert listing.returncode == 0, listing.stderr
    assert f"(superseded by {bristol})" in next(line for line in listing.stdout.splitlines()
                                                if line.startswith(leeds)), listing.stdout
    recalled = json.loads(instance.circ("recall", "where do we live", "--json").stdout)["memories"]
    assert recalled[0]["memory_id"] == bristol and leeds not in [m["memory_id"] for m in recalled], recalled

    rows = []
    for question, gold in QUESTIONS:
        record = _say(instance, question)
        assert record["turn_index"] == 0 and record["recall_status"] == "ok", record
        reply = record["assistant_text"]
        rows.append({"q": question, "seq": record["seq"], "reply": reply, "correct": gold in reply.lower(),
                     "placeholder": bool(_PLACEHOLDER.search(reply)),
                     "first_person": _first_person_about(reply, gold)})
    asked = [wait_until(lambda r=r: _decision(instance, r["seq"]), STORE_TIMEOUT_S,
                        f"ingest's decision on question {r['seq']}", interval_s=0.3) for r in rows]
    stored_questions = [r["q"] for r, d in zip(rows, asked, strict=True) if d["type"] != "memory.skipped"]
    figures = {"questions": len(rows), "correct": sum(r["correct"] for r in rows),
               "placeholder_replies": sum(r["placeholder"] for r in rows),
               "first_person_replies": sum(r["first_person"] for r in rows), "rows": rows}
    print("first_conversation", json.dumps(figures))
    assert rows[0]["correct"] and rows[1]["correct"], rows[:2]  # the transcript
    assert figures["placeholder_replies"] == 0, rows
    assert figures["correct"] >= 5, rows  # measured 6 of 6 (README); the goal is >= 90%
    assert not stored_questions
    memories = json.loads(instance.circ("memory", "list", "--json", "--limit", "100").stdout)["memories"]
    assert not [m for m in memories if m["text"].rstrip().endswith("?")], memories


def test_memories_can_be_edited_and_exported(instance: Instance) -> None:
    """Part 6 on the same instance: `circ memory edit` is logged with the old text and recalled at
    once; `circ memory export` lists everything with route, date, source turn and state."""
    exported = [json.loads(line) for line in instance.circ("memory", "export").stdout.splitlines()]
    aunt = next(m for m in exported if "July 9" in m["text"])
    assert {m["state"] for m in exported} == {"live", "superseded"}, exported
    assert {"route", "date", "turn_seq", "chunk", "session_id", "tags"} <= set(aunt), aunt
    result = instance.circ("memory", "edit", aunt["memory_id"], "My aunt's birthday is July 19.")
    assert result.returncode == 0, result.stderr
    [edited] = instance.events("memory.edited")
    assert edited["body"]["previous_text"] == aunt["text"] and edited["body"]["memory_id"] == aunt["memory_id"]
    top = json.loads(instance.circ("recall", "when is my aunt's birthday", "--json").stdout)["memories"][0]
    assert top["memory_id"] == aunt["memory_id"] and "July 19" in top["text"], top
    markdown = instance.circ("memory", "export", "--format", "md")
    assert markdown.returncode == 0 and f"**{aunt['memory_id']}**" in markdown.stdout, markdown
    bad = instance.circ("memory", "edit", "m999.0", "text")
    assert bad.returncode != 0 and "circ memory list" in bad.stderr, bad
