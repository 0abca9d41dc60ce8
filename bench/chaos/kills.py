"""The kill schedule: SIGKILL a random daemon every few seconds, plus kills aimed at a night.

Seeded, so a run can be repeated (the moments depend on the machine's speed,
the choices do not):

- every ``uniform(min_s, max_s)`` seconds one daemon, chosen by weight, is
  killed once supervisord reports it RUNNING for at least ``MIN_UPTIME_S``
  (a daemon that dies younger than supervisord's ``startsecs`` counts as a
  failed start, and ten of those in a row would leave it FATAL: that would
  test supervisord's give-up rule, not circadian);
- each training worker that appears is, with probability ``p_worker`` (0.35), killed
  a random moment into its life (a child of the trainer: the trainer must see
  the sleep fail and the worker must leave nothing served);
- each ``evaluation.completed`` the log receives is, with probability
  ``p_promotion`` (0.4), followed within ~0.3 s by a kill of the trainer: it lands
  between the verdict and ``adapter.promoted`` (manifest updates, the
  ``current`` swap, retention).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time
import xmlrpc.client
from collections import Counter
from dataclasses import dataclass, field

from services.cli.supervise import Supervisor
from services.common.paths import Paths

from . import procs

MIN_UPTIME_S = 2.0
WAIT_FOR_VICTIM_S = 15.0
WEIGHTS = {"eventlog": 2.0, "chat": 2.0, "ingest": 2.0, "api": 1.0,
           # Fewer: each of these ends the night in progress, and some nights should get to a verdict.
           "trainer": 0.4, "evaluator": 0.4}
POLL_S = 0.1


@dataclass
class KillTally:
    kills: list[tuple[float, str, int]] = field(default_factory=list)  # (seconds into the run, target, pid)
    skipped: Counter[str] = field(default_factory=Counter)  # chosen but not killable in time
    errors: list[str] = field(default_factory=list)

    def by_target(self) -> dict[str, int]:
        return dict(sorted(Counter(target for _, target, _ in self.kills).items()))


class Killer(threading.Thread):
    def __init__(self, paths: Paths, tally: KillTally, stop: threading.Event, *, seed: int,
                 interval_s: tuple[float, float], p_worker: float = 0.35, p_promotion: float = 0.4) -> None:
        super().__init__(name="chaos-kill", daemon=True)
        self.paths, self.tally, self.stop, self.interval_s = paths, tally, stop, interval_s
        self.p_worker, self.p_promotion = p_worker, p_promotion
        self.rng = random.Random(seed + 1)  # the schedule
        self.aim = random.Random(seed + 2)  # the kills aimed at a night
        self.supervisor = Supervisor(paths)
        self.started = time.monotonic()
        self.lock = threading.Lock()  # the two loops append to one tally

    def run(self) -> None:
        aimed = threading.Thread(target=self._aimed, name="chaos-kill-aimed", daemon=True)
        aimed.start()
        try:
            while not self.stop.wait(self.rng.uniform(*self.interval_s)):
                target = self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
                pid = self._victim(target)
                if pid is None:
                    self.tally.skipped[target] += 1
                else:
                    self._kill(target, pid)
        except Exception as exc:  # reported in the result, not lost in a thread
            self.tally.errors.append(f"killer: {exc!r}")
        aimed.join(timeout=10)

    def _kill(self, target: str, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        with self.lock:
            self.tally.kills.append((round(time.monotonic() - self.started, 1), target, pid))

    def _victim(self, name: str) -> int | None:
        deadline = time.monotonic() + WAIT_FOR_VICTIM_S
        while not self.stop.is_set():
            try:
                proc = {p.name: p for p in self.supervisor.processes()}.get(name)
            except (OSError, xmlrpc.client.Error):
                proc = None
            if proc is not None and proc.state == "RUNNING" and proc.pid and proc.uptime_s >= MIN_UPTIME_S:
                return proc.pid
            if time.monotonic() > deadline:
                return None
            self.stop.wait(0.2)
        return None

    # -- kills aimed at a night ------------------------------------------------
    def _aimed(self) -> None:
        seen_workers: set[int] = set()
        doomed: dict[int, float] = {}  # worker pid -> when to kill it
        last_seq = self._head()
        try:
            while not self.stop.wait(POLL_S):
                now = time.monotonic()
                for pid, _ppid in procs.workers(self.paths.home):
                    if pid not in seen_workers:
                        seen_workers.add(pid)
                        if self.aim.random() < self.p_worker:
                            doomed[pid] = now + self.aim.uniform(0.5, 8.0)  # loading, training or saving
                for pid, when in list(doomed.items()):
                    if now >= when:
                        del doomed[pid]
                        if procs.alive(pid) and procs.references(pid, self.paths.home):
                            self._kill("worker", pid)
                for seq in self._evaluations_after(last_seq):
                    last_seq = seq
                    if self.aim.random() < self.p_promotion:
                        self.stop.wait(self.aim.uniform(0.0, 0.3))
                        pid = self._trainer_pid()
                        if pid:
                            self._kill("trainer_mid_promotion", pid)
        except Exception as exc:
            self.tally.errors.append(f"aimed killer: {exc!r}")

    def _trainer_pid(self) -> int | None:
        try:
            proc = {p.name: p for p in self.supervisor.processes()}.get("trainer")
        except (OSError, xmlrpc.client.Error):
            return None
        return proc.pid if proc is not None and proc.state == "RUNNING" and proc.pid else None

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            conn = sqlite3.connect(f"file:{self.paths.events_db}?mode=ro", uri=True, timeout=2)
        except sqlite3.Error:
            return []
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.Error:
            return []
        finally:
            conn.close()

    def _head(self) -> int:
        rows = self._query("SELECT MAX(seq) FROM events")
        return (rows[0][0] or 0) if rows else 0

    def _evaluations_after(self, seq: int) -> list[int]:
        rows = self._query("SELECT seq FROM events WHERE seq > ? AND type = 'evaluation.completed' ORDER BY seq",
                           (seq,))
        return [r[0] for r in rows]


