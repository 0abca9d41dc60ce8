"""Issue 4's "Done when", end to end with the shipped defaults.

A day of scripted chats stating facts; `circ sleep --wait` (the default
training schedule, no `--steps`) promotes an adapter because the evaluator's
figures show it answers those facts better than the bare model; chat, never
restarted and with recall off, hot-reloads it and answers with it; rollback
returns to the base model. Real daemons, the real embedded model (greedy,
few tokens), the real CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from .harness import Instance, base_env, make_home, parse_json_lines, running, wait_until

pytestmark = pytest.mark.e2e

FACTS = ("My cat is called Miso.", "My sister lives in Lisbon.", "My favourite fruit is mango.",
         "My brother works at Siemens.")
QUESTION = "What is my cat called?"
SLEEP_TIMEOUT_S = 1500
RELOAD_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def inst() -> Iterator[Instance]:
    home = make_home()
    env = {k: v for k, v in base_env(home).items() if not k.startswith(("CIRCADIAN_TRAINER_", "CIRCADIAN_EVALUATOR_"))}
    env["CIRCADIAN_TRAINER_WINDOW"] = ""  # no scheduled sleep behind the test's back
    with running(home, env) as instance:
        yield instance


def _ask(inst: Instance, message: str) -> dict[str, Any]:
    """One greedy turn in a new session with recall off; the turn record."""
    result = inst.chat("--json", "--no-recall", "--temperature", "0", "--max-tokens", "16", "--message", message)
    assert result.returncode == 0, result.stderr
    [record] = parse_json_lines(result.stdout)
    return record


def _after(inst: Instance, seq: int, type_: str) -> list[dict[str, Any]]:
    return [e for e in inst.events(type_) if e["seq"] > seq]


def test_a_day_of_facts_is_learnt_overnight_served_without_recall_and_rolled_back(inst: Instance) -> None:
    before = _ask(inst, QUESTION)
    assert not before["adapter_id"], "no adapter before the first night"
    start = before["seq"]
    for text in FACTS:
        seq = _ask(inst, text)["seq"]
        wait_until(lambda seq=seq: [e for e in inst.events("memory.stored") if e["body"]["turn_seq"] == seq],
                   30, f"ingest to remember {text!r}")

    result = inst.circ("sleep", "--wait", "--json", "--timeout", str(SLEEP_TIMEOUT_S - 60), timeout_s=SLEEP_TIMEOUT_S)
    summary = json.loads(result.stdout)
    [evaluation] = _after(inst, start, "evaluation.completed")
    metrics = evaluation["body"]["metrics"]
    # The evaluator's figures: recall of the night's facts, on wording never trained
    # on, is above the bare model's, and the gates let it through.
    assert result.returncode == 0 and summary["verdict"] == "promote", (summary, metrics, inst.logs())
    assert metrics["fact_recall"] > metrics["fact_recall_base"], metrics
    adapter_id = summary["adapter_id"]
    [promoted] = _after(inst, start, "adapter.promoted")
    assert promoted["body"]["adapter_id"] == adapter_id

    # chat reloads it without a restart, and answers with it with recall off.
    chat_pid = inst.pid("chat")
    wait_until(lambda: [e for e in _after(inst, start, "adapter.reloaded") if e["body"]["adapter_id"] == adapter_id],
               RELOAD_TIMEOUT_S, "chat to reload the promoted adapter")
    after = _ask(inst, QUESTION)
    assert after["adapter_id"] == adapter_id and after["recall_status"] == "off", after
    assert inst.pid("chat") == chat_pid, "chat restarted"

    # Rollback: back to the base model, again without a restart.
    rolled = inst.circ("adapters", "rollback")
    assert rolled.returncode == 0, rolled.stderr
    wait_until(lambda: not _ask(inst, QUESTION)["adapter_id"], RELOAD_TIMEOUT_S, "chat to serve the base model")
    [rollback] = _after(inst, start, "adapter.rolled_back")
    assert rollback["body"]["previous_id"] == adapter_id and rollback["body"]["adapter_id"] is None
    assert inst.pid("chat") == chat_pid
    assert (inst.paths.adapters / adapter_id).is_dir(), "rollback keeps the adapter"
