"""Fail closed through the real daemons: a night whose verdict is lost is rejected, never promoted.

One instance (all daemons under supervisord), two tiny nights (4 steps):

- the evaluator is killed with -9 while it judges the night's adapter
  (supervisord restarts it, and the new process knows nothing of the
  request): the trainer sees the new pid at its next check and rejects the
  night at once, with a reason that says so, instead of waiting out the
  verdict timeout; ``adapters/current`` is unchanged and the night's line in
  ``data/reports/nights.jsonl`` says ``reject``;
- ``[evaluator] verdict_timeout_s`` is set to 3 s (circadian.toml, trainer
  restarted): the evaluator cannot judge that fast, the night is rejected
  with a reason naming the timeout and the setting, ``current`` unchanged.

The socket-free cases (NaN figures, an empty canary set, a model or
candidate that cannot be loaded, a promote without proof) are in
tests/test_evaluator.py and tests/test_nights_log.py.
"""

from __future__ import annotations

import pytest

from protocol.report_lines import NIGHT_LINE_DECODER
from services.lib.adapters.store import AdapterStore

from . import test_night
from .harness import Instance, wait_until
from .test_night import (
    FACTS,
    STEPS,
    VERDICT_TIMEOUT_S,
    _ensure_trainable,
    _events,
    _head,
    _kill9,
    _ping,
    _start_sleep,
    _stop_orphaned_judging,
    _teach,
    _wait_event,
    _wait_trainer_restarted,
    _wait_uptime,
)

pytestmark = pytest.mark.e2e

REJECT_TIMEOUT_S = 120.0  # the trainer checks the evaluator every 5 s; a restart takes seconds


inst = test_night.inst  # the night tests' instance fixture; module-scoped, so this module gets its own


def _judging(inst: Instance, adapter_id: str) -> bool:
    pong = _ping(inst, "evaluator")
    return pong is not None and pong.details.get("busy_with") == adapter_id


def _night_line(inst: Instance, sleep_id: str):  # noqa: ANN202
    path = inst.paths.data / "reports" / "nights.jsonl"
    lines = [NIGHT_LINE_DECODER.decode(x) for x in path.read_text().splitlines()] if path.is_file() else []
    found = [x for x in lines if x.sleep_id == sleep_id]
    return found[0] if found else None


def _assert_rejected(inst: Instance, start: int, accepted, current_before: str | None, says: str,  # noqa: ANN001
                     timeout_s: float = REJECT_TIMEOUT_S) -> None:
    rejected = _wait_event(inst, "adapter.rejected", start, timeout_s, "the night to be rejected",
                           adapter_id=accepted.adapter_id)
    reasons = rejected["body"]["reasons"]
    assert len(reasons) == 1 and says in reasons[0], reasons
    assert not _events(inst, start, "adapter.promoted")
    store = AdapterStore(inst.paths.adapters)
    assert store.current() == current_before
    assert store.show(accepted.adapter_id)["verdict"] == "reject"
    line = wait_until(lambda: _night_line(inst, accepted.sleep_id), 60, "the night's line in nights.jsonl")
    assert line.verdict == "reject" and line.adapter_id == accepted.adapter_id and line.total_s > 0


def test_an_evaluator_killed_mid_judgement_rejects_the_night(inst: Instance) -> None:
    _teach(inst, FACTS)
    current_before = AdapterStore(inst.paths.adapters).current()
    start = _head(inst)
    accepted = _start_sleep(inst, STEPS)
    wait_until(lambda: _judging(inst, accepted.adapter_id), VERDICT_TIMEOUT_S,
               f"the evaluator to judge {accepted.adapter_id}", interval_s=0.5)
    _wait_uptime(inst, "evaluator", 2.0)  # supervisord counts a younger death as a failed start
    old = inst.pid("evaluator")
    _kill9(old)
    _assert_rejected(inst, start, accepted, current_before, "the evaluator restarted while judging")
    inst.wait_running("evaluator", not_pid=old, timeout_s=60)


def test_no_verdict_within_the_timeout_rejects_the_night(inst: Instance) -> None:
    (inst.home / "circadian.toml").write_text("[evaluator]\nverdict_timeout_s = 3\n")
    old = inst.pid("trainer")
    _kill9(old)  # supervisord restarts it, and the new one reads the file
    _wait_trainer_restarted(inst, old)
    inst.wait_ready("evaluator", timeout_s=60)
    _ensure_trainable(inst)
    current_before = AdapterStore(inst.paths.adapters).current()
    start = _head(inst)
    accepted = _start_sleep(inst, STEPS)
    # Training first (minutes on a busy box), then 3 s of waiting for a verdict.
    _assert_rejected(inst, start, accepted, current_before, "no verdict within 3 s", timeout_s=VERDICT_TIMEOUT_S)
    assert "verdict_timeout_s" in _events(inst, start, "adapter.rejected")[0]["body"]["reasons"][0]
    _stop_orphaned_judging(inst, accepted.adapter_id)  # it would judge on for minutes, holding the lock
