"""`circ bench chaos` for under a minute, as a user runs it: nothing lost or doubled under kill -9.

One real run (a scratch home, every daemon under supervisord, chat turns,
recalls, imports, forgets and a night while a random daemon, the training
worker or the trainer mid-promotion is SIGKILLed every 2-4 s). The JSON it
prints must say every completed turn is in the log exactly once, the log
verifies, ingest decided every turn once, the index equals a rebuild,
``adapters/current`` was never broken, the heavy-run lock never had two
holders and no process outlived `circ down`. The long runs (10 and 60
minutes) are in README "Reliability"; the checks themselves are pinned down
in tests/test_chaos_checks.py.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from services.common.paths import REPO_ROOT

pytestmark = pytest.mark.e2e

CIRC = REPO_ROOT / "bin" / "circ"
MIN_KILLS = 5


@pytest.mark.timeout(900)
def test_a_short_chaos_run_loses_and_doubles_nothing() -> None:
    seed = int(os.environ.get("CIRCADIAN_E2E_SEED", "0")) or int.from_bytes(os.urandom(3), "big") + 1
    print(f"chaos seed {seed} (rerun with CIRCADIAN_E2E_SEED={seed})")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCADIAN_")}
    result = subprocess.run([str(CIRC), "bench", "chaos", "--minutes", "0.75", "--kill-every", "2,4",
                             "--sleep-gap", "15", "--seed", str(seed), "--json"],
                            capture_output=True, text=True, timeout=840, cwd=REPO_ROOT, env=env)
    assert result.stdout.strip(), f"no JSON (rc {result.returncode}):\n{result.stderr[-4000:]}"
    data = json.loads(result.stdout)
    print(json.dumps({k: data.get(k) for k in ("kills", "kills_by_target", "turns_completed", "events", "recalls",
                                               "imports", "forgets", "sleeps", "nights", "chaos_s")}))
    assert data["kills"] >= MIN_KILLS, f"only {data['kills']} kills landed: {data['kills_by_target']}"
    assert data["turns_completed"] > 0 and data["completed_checked"] >= data["turns_completed"]
    assert (data["lost"], data["doubled"], data["altered"]) == (0, 0, 0), \
        (data["lost_examples"], data["doubled_examples"], data["altered_examples"])
    assert data["seq_gaps"] == 0 and data["log_verify"], data["log_verify_said"]
    assert (data["undecided"], data["decided_twice"]) == (0, 0), \
        (data["undecided_examples"], data["decided_twice_examples"])
    assert data["index_mismatch"] == 0, data["index_mismatch_examples"]
    assert data["bad_current"] == 0, data["bad_current_examples"]
    assert data["lock_conflicts"] == 0, data["lock_conflict_examples"]
    assert data["orphans"] == 0, data["orphans_list"]
    assert data["forget_leftovers"] == 0, data["forget_leftover_examples"]
    assert not data["not_recovered"] and not data["errors"], (data["not_recovered"], data["errors"])
    assert data["ok"] is True and result.returncode == 0, result.stderr[-3000:]
