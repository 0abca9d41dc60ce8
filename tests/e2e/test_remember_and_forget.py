"""Issue 3's "Done when", end to end: a fact told in one session is recalled in
another, and `circ forget` makes it stop.

Real daemons under supervisord (`circ up`), the real embedded model (greedy,
few tokens), the real CLI. Each question is asked in a new session (no
`--session`), so the only way the answer can come back is memory recall:

1. before the fact is told, the bare answer does not contain it (so it is
   recall, not the model, that knows);
2. "my sister Mara's birthday is March 14th" is chatted; ingest stores it;
3. a new session asks "When is Mara's birthday?": recall is ok, the turn
   record names the stored memory, the reply says "March 14";
4. `circ forget --match "March 14" --yes`; a new session asks again: the
   memory is not recalled and the reply no longer says "March 14".

Tests in this module run in file order on one instance.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .harness import TURN_TYPE, Instance, parse_json_lines, wait_until

pytestmark = pytest.mark.e2e

FACT = "my sister Mara's birthday is March 14th"
QUESTION = "When is Mara's birthday?"
ANSWER = "March 14"
MAX_TOKENS = "24"  # the recalled answer says the date within ~14 tokens
STORE_TIMEOUT_S = 60.0
DECISIONS = ("memory.stored", "memory.skipped", "memory.failed")


def _ask(instance: Instance, message: str) -> dict[str, Any]:
    """One greedy turn in a new session; the logged turn record (the event body plus seq)."""
    result = instance.chat("--json", "--temperature", "0", "--max-tokens", MAX_TOKENS,
                           "--message", message)
    assert result.returncode == 0, result.stderr
    [record] = parse_json_lines(result.stdout)
    assert record["turn_index"] == 0, record  # a new session: no history to answer from
    [logged] = [e for e in instance.events(TURN_TYPE) if e["seq"] == record["seq"]]
    for key in ("session_id", "user_text", "assistant_text", "recall_status", "recalled_ids"):
        assert logged["body"][key] == record[key], key
    return record


def _memory_of(instance: Instance, turn_seq: int) -> dict[str, Any] | None:
    """ingest's decision for the turn at ``turn_seq`` (None until it has one)."""
    decisions = [e for e in instance.events() if e["type"] in DECISIONS and e["body"]["turn_seq"] == turn_seq]
    return decisions[0] if decisions else None


def _recall_ids(instance: Instance, query: str) -> list[str]:
    result = instance.circ("recall", query, "--json")
    assert result.returncode == 0, result.stderr
    return [m["memory_id"] for m in json.loads(result.stdout)["memories"]]


def test_told_fact_is_recalled_in_a_new_session_until_forgotten(instance: Instance) -> None:
    # 1. Without the memory, the model does not know (the proof rests on this).
    bare = _ask(instance, QUESTION)
    assert bare["recall_status"] == "ok", bare
    assert ANSWER not in bare["assistant_text"], f"the model knows without recall: {bare['assistant_text']!r}"

    # 2. Tell it; ingest stores it.
    told = _ask(instance, FACT)
    decision = wait_until(lambda: _memory_of(instance, told["seq"]), STORE_TIMEOUT_S,
                          f"ingest's decision on turn {told['seq']}", interval_s=0.2)
    assert decision["type"] == "memory.stored", decision["body"]
    assert decision["body"]["route"] in ("rag", "both"), decision["body"]  # recallable
    memory_ids = decision["body"]["memory_ids"]
    assert memory_ids, decision["body"]

    # 3. A new session asks: recall brings the memory, the reply has the date.
    recalled = _ask(instance, QUESTION)
    assert recalled["session_id"] not in (bare["session_id"], told["session_id"])
    assert recalled["recall_status"] == "ok", recalled
    assert set(memory_ids) & set(recalled["recalled_ids"]), recalled
    assert ANSWER in recalled["assistant_text"], recalled["assistant_text"]

    # 4. Forget it (non-interactive); a new session asks again.
    result = instance.circ("forget", "--match", ANSWER, "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    [forgotten] = instance.events("memory.forgotten")
    assert set(memory_ids) <= set(forgotten["body"]["memory_ids"]), forgotten["body"]
    # --match also erases every logged turn saying it: the fact and the recalled answer.
    assert {told["seq"], recalled["seq"]} <= set(forgotten["body"]["turn_seqs"]), forgotten["body"]
    assert not set(memory_ids) & set(_recall_ids(instance, QUESTION))

    after = _ask(instance, QUESTION)
    assert after["session_id"] not in (bare["session_id"], told["session_id"], recalled["session_id"])
    assert after["recall_status"] == "ok", after
    assert not set(memory_ids) & set(after["recalled_ids"]), after
    assert ANSWER not in after["assistant_text"], after["assistant_text"]


NAMED_FACT = "my sister Anna's birthday is October 9th"
NAMED_QUESTION = "When is Anna's birthday?"
NAMED_ANSWER = "October 9"


def test_a_persons_name_is_kept_recalled_and_answered(instance: Instance) -> None:
    """Names are kept by default (issue 12; `ingest.redact_names = true` redacts them, tested in
    tests/test_memory_trust.py): memory holds "Anna" as said, and recall finds it by meaning."""
    told = _ask(instance, NAMED_FACT)
    decision = wait_until(lambda: _memory_of(instance, told["seq"]), STORE_TIMEOUT_S,
                          f"ingest's decision on turn {told['seq']}", interval_s=0.2)
    assert decision["type"] == "memory.stored" and decision["body"]["redactions"] == {}, decision
    [memory_id] = decision["body"]["memory_ids"]
    shown = instance.circ("memory", "show", memory_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["text"] == NAMED_FACT

    result = instance.circ("recall", NAMED_QUESTION, "--json")
    assert result.returncode == 0, result.stderr
    top = json.loads(result.stdout)["memories"][0]
    assert top["memory_id"] == memory_id and top["text"] == NAMED_FACT, top

    asked = _ask(instance, NAMED_QUESTION)
    assert asked["recall_status"] == "ok" and memory_id in asked["recalled_ids"], asked
    assert NAMED_ANSWER in asked["assistant_text"], asked["assistant_text"]
