#!/usr/bin/env python
"""Chaos: a real instance under steady load while a seeded schedule kill -9s its processes.

Usage: bin/circ bench chaos [--minutes N] [--json] [--seed S] [--kill-every MIN,MAX] [--keep]

In a scratch CIRCADIAN_HOME with every daemon up (`circ up`), for ``--minutes``:

- load (bench/chaos/load.py): chat turns back to back (a few tokens each,
  some with recall), resent with the same request_id when chat or the log is
  down, as a user would, and counted as completed only when the client got
  the reply; every few seconds `circ recall`, `circ import` of a fresh
  JSON-lines file, `circ forget --match MARK --yes` of a marker an earlier
  turn carried, and, when the trainer is idle, `circ sleep --steps N` (the
  gates opened wide so some nights promote);
- kills (bench/chaos/kills.py): every MIN..MAX seconds SIGKILL of a random
  daemon (eventlog, chat, ingest, trainer, evaluator, api) that has been up
  2 s, a third of the training workers a moment into their life, and the
  trainer right after 40% of the evaluations (mid-promotion); supervisord
  restarts them;
- sampled every 0.25 s (bench/chaos/watch.py): `adapters/current` is absent
  or a complete adapter whose hashes verify; the heavy-run lock has at most
  one holder, a live trainer or evaluator.

Then a quiet period (every daemon back and ready, the night in progress
finished, ingest caught up) and the checks (bench/chaos/checks.py): every
completed turn (chat and imported) is in the log exactly once at the seq the
client was told, with the text it was told; seq is gap-free and `circ log
verify` passes; every logged turn has exactly one ingest decision; the index
equals a rebuild (`circ memory rebuild`: memories and recall answers);
forgotten markers are gone from memory and their turns erased; after `circ
down` no process references the scratch home.

Output: one JSON object (--json; else a short summary) with seed, minutes,
kills by target, turns attempted/completed, events, recalls, imports,
forgets, sleeps, lost, doubled, undecided, index_mismatch, bad_current,
orphans, lock_conflicts and ok. Exit 1 when anything is off. Progress lines
go to stderr.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO_ROOT, emit, fail, machine_load, progress  # noqa: E402

from bench.chaos import checks  # noqa: E402
from bench.chaos.kills import Killer, KillTally  # noqa: E402
from bench.chaos.load import ChatLoad, LoadTally, OpsLoad  # noqa: E402
from bench.chaos.watch import Watcher  # noqa: E402

PROG = "bench_chaos"
CIRC = REPO_ROOT / "bin" / "circ"
# The path is under test, not what a 2-step night learns: open the gates so some nights promote.
GATES_OPEN = {
    "CIRCADIAN_EVALUATOR_MIN_FACT_RECALL": "0", "CIRCADIAN_EVALUATOR_MAX_CANARY_DROP_PTS": "100",
    "CIRCADIAN_EVALUATOR_MAX_PPL_DRIFT_PCT": "1000", "CIRCADIAN_EVALUATOR_MAX_FALSE_RECALL": "1",
    "CIRCADIAN_EVALUATOR_MAX_FALSE_RECALL_RISE": "1", "CIRCADIAN_EVALUATOR_MAX_FORMAT_DROP": "1",
}
INSTANCE_ENV = {
    **GATES_OPEN,
    "CIRCADIAN_TRAINER_MODEL_PARAPHRASES": "0",  # no generation pass in a night: nights stay short
    "CIRCADIAN_API_PORT": "0",  # any free port: never fight another instance over 8642
}
QUIET_TIMEOUT_S = 300.0  # everything back, the night in progress judged, ingest caught up
PROGRESS_EVERY_S = 15.0
NIGHT_EVENTS = ("training.started", "training.failed", "adapter.promoted", "adapter.rejected")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="circ bench chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load and the kills run "
                        "(default 10; fractions allowed, e.g. 0.75); the quiet period and checks come after")
    parser.add_argument("--seed", type=int, help="seed of the kill schedule and the load (default: random, "
                        "printed in the result so a run can be repeated)")
    parser.add_argument("--kill-every", default="3,6", metavar="MIN,MAX",
                        help="seconds between scheduled kills, uniform in MIN..MAX (default 3,6)")
    parser.add_argument("--max-tokens", type=int, default=2, help="tokens per chat reply (default 2)")
    parser.add_argument("--sleep-steps", type=int, default=2, help="training steps per night (default 2)")
    parser.add_argument("--sleep-gap", type=float, default=30.0, metavar="S",
                        help="at least S seconds between the starts of two nights (default 30)")
    parser.add_argument("--json", action="store_true", help="print the JSON object (else a short summary)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch home (its path goes to stderr); "
                        "a run that is not ok always keeps it")
    args = parser.parse_args(argv)
    try:
        low, high = (float(x) for x in args.kill_every.split(","))
    except ValueError:
        parser.error(f"--kill-every wants MIN,MAX in seconds (e.g. 3,6), not {args.kill_every!r}")
    if not 0.5 <= low <= high <= 600:
        parser.error("--kill-every: need 0.5 <= MIN <= MAX <= 600")
    args.kill_every = (low, high)
    if not 0.05 <= args.minutes <= 24 * 60:
        parser.error("--minutes must be between 0.05 and 1440")
    if not 1 <= args.max_tokens <= 64 or not 1 <= args.sleep_steps <= 100 or args.sleep_gap < 0:
        parser.error("--max-tokens must be 1..64, --sleep-steps 1..100, --sleep-gap >= 0")
    args.seed = args.seed if args.seed is not None else random.randrange(1, 2**31)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench.memory.system import ScratchSystem, SystemError_

    system = ScratchSystem(keep=True, env=INSTANCE_ENV)
    progress(f"chaos seed {args.seed}, {args.minutes:g} min, kills every {args.kill_every[0]:g}-"
             f"{args.kill_every[1]:g} s, home {system.home}")
    circ = checks.run_cli(system.env, CIRC, timeout_s=600.0)
    result: dict[str, Any] = {"bench": "chaos", "seed": args.seed, "minutes": args.minutes,
                              "kill_every_s": list(args.kill_every), "machine_before": machine_load()}
    try:
        try:
            system.up()
        except SystemError_ as exc:
            fail(PROG, str(exc))
        result.update(run_chaos(system, args, circ))
    finally:
        down = circ("down")
        result["down_rc"] = down.returncode
        result["orphans_list"] = checks.orphans(system.home, {os.getpid()})
        result["orphans"] = len(result["orphans_list"])
        result["ok"] = verdict(result)
        if args.keep or not result["ok"]:  # a failed run keeps its logs and events.db for a post-mortem
            progress(f"kept {system.home}")
        else:
            shutil.rmtree(system.home, ignore_errors=True)
    if args.json:
        emit(result)
    else:
        print(summary(result))
    return 0 if result["ok"] else 1


def run_chaos(system: Any, args: argparse.Namespace, circ: Any) -> dict[str, Any]:
    paths = system.paths
    stop, watch_stop = threading.Event(), threading.Event()
    load, kills = LoadTally(), KillTally()
    watcher = Watcher(paths.home, paths.adapters, paths.run / "heavy.lock", watch_stop)
    chat = ChatLoad(paths, load, stop, seed=args.seed, max_tokens=args.max_tokens)
    ops = OpsLoad(paths, system.env, load, stop, seed=args.seed, sleep_steps=args.sleep_steps,
                  sleep_gap_s=args.sleep_gap, interval_s=(1.5, 3.0))
    killer = Killer(paths, kills, stop, seed=args.seed, interval_s=args.kill_every)
    started = time.monotonic()
    for thread in (watcher, chat, ops, killer):
        thread.start()
    end = started + args.minutes * 60
    while time.monotonic() < end:
        time.sleep(min(PROGRESS_EVERY_S, max(0.0, end - time.monotonic())))
        progress(f"{time.monotonic() - started:5.0f} s: {len(kills.kills)} kills, "
                 f"{len(load.completed)}/{len(load.turns)} turns, {len(load.imports)} imports, "
                 f"{len(load.forgets)} forgets, sleeps {dict(load.sleeps)}")
    stop.set()
    progress("load and kills stopping; quiet period")
    for thread in (chat, ops, killer):
        thread.join(timeout=300)
    chaos_s = round(time.monotonic() - started, 1)
    out: dict[str, Any] = {"chaos_s": chaos_s}
    out.update(quiet(system, paths, circ, load))
    watch_stop.set()
    watcher.join(timeout=10)
    bad_current = list(watcher.tally.bad_current) + watcher.reverify()
    out.update(figures(load, kills, watcher, bad_current))
    return out


def quiet(system: Any, paths: Any, circ: Any, load: LoadTally) -> dict[str, Any]:
    """Wait for everything to be back and caught up, then run the checks of the log and memory."""
    from services.cli.daemons import ping
    from services.cli.supervise import DAEMONS, Supervisor

    began = time.monotonic()
    deadline = began + QUIET_TIMEOUT_S
    not_ready = list(DAEMONS)
    while not_ready and time.monotonic() < deadline:
        not_ready = [n for n in DAEMONS if not ((p := ping(paths, n, timeout_s=2.0)) and p.ready)]
        time.sleep(0.5)
    try:
        states = {p.name: p.state for p in Supervisor(paths).processes()}
    except OSError as exc:
        states = {"supervisord": f"unreachable: {exc}"}
    out: dict[str, Any] = {"not_recovered": not_ready, "daemon_states": states}
    out["trainer_idle_at_end"] = _wait_trainer_idle(paths, deadline)
    events = checks.read_log(paths)
    last_turn = max((e["seq"] for e in events if e["type"] == checks.TURN), default=0)
    out["ingest_caught_up"] = checks.wait_caught_up(paths, last_turn, max(30.0, deadline - time.monotonic()))
    out["quiet_s"] = round(time.monotonic() - began, 1)
    progress(f"quiet after {out['quiet_s']} s (not ready: {not_ready or 'none'}); checking")
    events = checks.read_log(paths)
    out.update(checks.turns_check(events, load))
    out.update(checks.seq_check(events))
    out.update(checks.log_verify(circ))
    out.update(checks.decisions_check(events))
    live = checks.memories(paths)
    out.update(checks.forget_check(events, load, live))
    out.update(checks.index_check(paths, circ, last_turn, timeout_s=300.0))
    nights = {kind: sum(1 for e in events if e["type"] == kind) for kind in NIGHT_EVENTS}
    out["nights"] = nights
    return out


def _wait_trainer_idle(paths: Any, deadline: float) -> bool:
    from protocol.envelope import new_id
    from protocol.trainer_api import GetTrainerStatus, TrainerReply
    from services.common.rpc import RemoteError, RpcClient, ServiceUnavailable

    while time.monotonic() < deadline:
        client = RpcClient(paths, "trainer", "trainer.ctl", TrainerReply, timeout_s=5.0)
        try:
            if getattr(client.request(GetTrainerStatus(request_id=new_id("st"))), "state", "") == "idle":
                return True
        except (ServiceUnavailable, RemoteError):
            pass
        finally:
            client.close()
        time.sleep(1.0)
    return False


def figures(load: LoadTally, kills: KillTally, watcher: Watcher, bad_current: list[str]) -> dict[str, Any]:
    w = watcher.tally
    return {
        "kills": len(kills.kills), "kills_by_target": kills.by_target(), "kills_skipped": dict(kills.skipped),
        "turns_attempted": len(load.turns), "turns_completed": len(load.completed),
        "turns_gave_up": len(load.gave_up), "turn_errors_seen": dict(load.turn_errors),
        "resends": sum(t.attempts - 1 for t in load.turns.values() if t.attempts > 1),
        "recalls": dict(load.recalls), "imports": len(load.imports), "import_failures": load.import_failures,
        "imported_turns": sum(load.imports.values()), "forgets": len(load.forgets),
        "forget_failures": load.forget_failures, "sleeps": dict(load.sleeps),
        "bad_current": len(bad_current), "bad_current_examples": bad_current[:5],
        "current_seen": dict(w.current_seen), "watch_samples": w.samples,
        "lock_samples_held": w.lock_samples_held, "lock_holders": dict(w.lock_holders),
        "lock_conflicts": len(w.lock_conflicts), "lock_conflict_examples": w.lock_conflicts[:5],
        "op_failures": len(load.op_failures), "op_failure_examples": load.op_failures[-8:],
        "errors": load.errors[:10] + kills.errors[:10],
    }


def verdict(r: dict[str, Any]) -> bool:
    zero = ("lost", "doubled", "altered", "seq_gaps", "undecided", "decided_twice", "index_mismatch",
            "bad_current", "orphans", "lock_conflicts", "forget_leftovers",
            "import_failures", "forget_failures")  # an import or forget that did not go through in 180 s
    return (all(r.get(k, 1) == 0 for k in zero) and r.get("log_verify") is True and not r.get("not_recovered", [1])
            and r.get("ingest_caught_up") is True and not r.get("errors") and r.get("turns_completed", 0) > 0)


def summary(r: dict[str, Any]) -> str:
    return (f"chaos seed {r['seed']}: {r.get('kills', 0)} kills {r.get('kills_by_target', {})} over "
            f"{r.get('chaos_s', 0)} s; turns {r.get('turns_completed', 0)}/{r.get('turns_attempted', 0)} completed, "
            f"{r.get('events', 0)} events; lost {r.get('lost')}, doubled {r.get('doubled')}, undecided "
            f"{r.get('undecided')}, index mismatch {r.get('index_mismatch')}, bad current {r.get('bad_current')}, "
            f"orphans {r.get('orphans')}, lock conflicts {r.get('lock_conflicts')}: {'ok' if r['ok'] else 'NOT OK'}")


if __name__ == "__main__":
    sys.exit(main())
