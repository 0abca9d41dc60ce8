"""The chaos benchmark's checks bite: each one, fed a real fault, reports it.

`circ bench chaos` (tests/e2e/test_chaos.py) passes only if these checks find
nothing, so each is shown here to find what it looks for: a completed turn
missing from the log, a turn logged twice or with other text, a gap in seq,
a turn ingest never decided (or decided twice), ``adapters/current`` at an
adapter whose hashes do not match, and the heavy-run lock held by a process
that is neither trainer nor evaluator, or by two processes at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from bench.chaos import checks, procs
from bench.chaos.load import LoadTally, Turn
from bench.chaos.watch import Watcher
from services.common.paths import REPO_ROOT
from services.lib.adapters.store import AdapterStore


def _turn_event(seq: int, request_id: str, user: str = "hi", assistant: str = "ok", erased: bool = False) -> dict:
    return {"seq": seq, "event_id": f"turn-{request_id}", "type": checks.TURN,
            "body": {"request_id": request_id, "user_text": "" if erased else user,
                     "assistant_text": "" if erased else assistant, "erased": erased}}


def _completed(request_id: str, seq: int, user: str = "hi", assistant: str = "ok", marker: str = "") -> Turn:
    return Turn(request_id=request_id, session_id="s", text=user, seq=seq, assistant_text=assistant, marker=marker)


def test_turns_check_finds_lost_doubled_and_altered_turns() -> None:
    load = LoadTally()
    for turn in (_completed("a", 1), _completed("b", 2), _completed("c", 9), _completed("d", 4, assistant="yes"),
                 _completed("e", 5, marker="fgtx")):
        load.turns[turn.request_id] = turn
    load.turns["never"] = Turn(request_id="never", session_id="s", text="hi")  # attempted, never completed
    load.imports["f" * 24] = 2
    events = [_turn_event(1, "a"), _turn_event(2, "b"), _turn_event(3, "b"), _turn_event(4, "d"),
              _turn_event(5, "e", erased=True), _turn_event(6, f"imp-{'f' * 24}-0")]
    found = checks.turns_check(events, load)
    assert (found["lost"], found["doubled"], found["altered"]) == (2, 1, 1), found  # c and imp 1; b; d
    assert found["completed_checked"] == 5 + 2
    assert any("c (told seq 9" in x for x in found["lost_examples"])
    assert any(f"imp-{'f' * 24}-1" in x for x in found["lost_examples"])


def test_seq_and_decision_checks_find_gaps_and_turns_decided_never_or_twice() -> None:
    events = [_turn_event(1, "a"), _turn_event(2, "b"), _turn_event(4, "c"),
              {"seq": 5, "type": "memory.stored", "body": {"turn_seq": 1}},
              {"seq": 6, "type": "memory.skipped", "body": {"turn_seq": 1}},
              {"seq": 7, "type": "memory.failed", "body": {"turn_seq": 4}}]
    assert checks.seq_check(events)["seq_gaps"] == 1
    found = checks.decisions_check(events)
    assert (found["undecided"], found["decided_twice"]) == (1, 1), found
    assert found["undecided_examples"] == [2] and found["decided_twice_examples"] == [1]


def test_forget_check_finds_a_forgotten_marker_still_in_memory_or_in_the_log() -> None:
    load = LoadTally()
    load.turns["a"] = _completed("a", 1, user="note fgt1", marker="fgt1")
    load.forgets["fgt1"] = 1
    events = [_turn_event(1, "a", user="note fgt1")]  # not erased
    live = [{"memory_id": "m1", "text": "note fgt1", "forgotten": False}]
    assert checks.forget_check(events, load, live)["forget_leftovers"] == 2
    assert checks.forget_check([_turn_event(1, "a", erased=True)], load, [])["forget_leftovers"] == 0


def _adapter(store: AdapterStore) -> str:
    adapter_id = store.new_id()
    staging = store.stage(adapter_id)
    (staging / "adapters.safetensors").write_bytes(os.urandom(2048))
    (staging / "adapter_config.json").write_text('{"fine_tune_type": "lora"}')
    store.commit(adapter_id, {"note": "tests/test_chaos_checks.py"})
    return adapter_id


def test_watcher_flags_current_at_an_adapter_that_does_not_verify(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "adapters")
    store.root.mkdir()
    watcher = Watcher(tmp_path, store.root, tmp_path / "heavy.lock", threading.Event())
    watcher.sample()  # no adapter yet: the base model, which is fine
    good = _adapter(store)
    store.promote(good)
    watcher.sample()
    assert watcher.tally.bad_current == [] and watcher.tally.current_seen == {"none": 1, good: 1}
    bad = _adapter(store)
    with open(store.root / bad / "adapters.safetensors", "r+b") as f:  # a flipped byte
        f.write(b"\xff")
    tmp = store.root / "current.tmp"
    tmp.symlink_to(bad)
    tmp.replace(store.root / "current")  # pointed at it bypassing promote (which would refuse)
    watcher.sample()
    assert len(watcher.tally.bad_current) == 1 and "sha256" in watcher.tally.bad_current[0]
    (store.root / bad / "adapter_config.json").unlink()
    watcher.sample()
    assert "missing adapter_config.json" in watcher.tally.bad_current[1]


HOLD = textwrap.dedent("""
    import sys, time
    from services.common.heavylock import HeavyRunLock
    lock = HeavyRunLock(sys.argv[1])
    assert lock.acquire("test", timeout_s=5)
    print("held", flush=True)
    time.sleep(60)
""")


def _holder(lock: Path, home: Path, role: str) -> subprocess.Popen[str]:
    """A process holding the heavy-run lock; ``role`` in its argv is what the watcher reads."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), role], cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, env={**os.environ, "CIRCADIAN_HOME": str(home),
                                                         "PYTHONPATH": str(REPO_ROOT)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads the kernel's lock table (Linux)")
def test_watcher_flags_a_lock_held_by_a_stranger_or_by_two(tmp_path: Path) -> None:
    lock = tmp_path / "heavy.lock"
    watcher = Watcher(tmp_path, tmp_path / "adapters", lock, threading.Event())
    started: list[subprocess.Popen[str]] = []
    try:
        started.append(_holder(lock, tmp_path, "services.trainer"))
        watcher.sample()
        assert watcher.tally.lock_holders == {"trainer": 1} and watcher.tally.lock_conflicts == []
        assert procs.flock_holders({procs.inode_key(lock)}) == [started[0].pid]
        # The file replaced while held: a second process gets "the" lock on the new inode.
        lock.unlink()
        started.append(_holder(lock, tmp_path, "services.evaluator"))
        watcher.sample()
        assert any("2 holders at once" in c for c in watcher.tally.lock_conflicts), watcher.tally
        for proc in started:
            proc.kill()
            proc.wait(10)
        started = [_holder(lock, tmp_path, "services.trainer.worker")]  # a worker keeping the lock
        watcher.tally.lock_conflicts.clear()
        watcher.sample()
        assert watcher.tally.lock_conflicts and "no live trainer or evaluator" in watcher.tally.lock_conflicts[0]
    finally:
        for proc in started:
            proc.kill()
            proc.wait(10)
