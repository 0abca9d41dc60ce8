"""Sampling, while the chaos runs, what must hold at every instant (not only at the end).

- ``adapters/current`` is absent (the base model) or a symlink to a complete
  adapter whose files match their recorded sha256. A committed adapter is
  immutable, so each adapter id is hashed the first time current points at it
  (and again at the end); every sample still checks the link resolves to a
  directory holding the required files.
- the heavy-run lock: the kernel's /proc/locks lists at most one exclusive
  FLOCK on the lock file (every inode ever seen at its path, in case the
  file were replaced while held), and its holder is a live trainer or
  evaluator daemon of this instance. A holder that is any other process is
  a conflict at once; one that is dying (killed -9: the kernel frees a flock
  only when the process closes its files, after it has dropped its memory)
  is a conflict only if it still holds the lock ``DYING_GRACE_S`` later:
  then a child kept the lock alive after its holder died.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from services.lib.adapters.store import AdapterStore

from . import procs

SAMPLE_INTERVAL_S = 0.25
REQUIRED = ("adapters.safetensors", "adapter_config.json", "manifest.json")
DYING_GRACE_S = 5.0
HOLDER_MODULES = {b"services.trainer": "trainer", b"services.evaluator": "evaluator"}


@dataclass
class WatchTally:
    samples: int = 0
    current_seen: Counter[str] = field(default_factory=Counter)  # adapter id (or "none") -> samples
    bad_current: list[str] = field(default_factory=list)  # what was wrong, one entry per bad sample
    lock_samples_held: int = 0
    lock_holders: Counter[str] = field(default_factory=Counter)  # trainer | evaluator | dying | other
    lock_conflicts: list[str] = field(default_factory=list)


class Watcher(threading.Thread):
    def __init__(self, home: Path, adapters: Path, lock_path: Path, stop: threading.Event) -> None:
        super().__init__(name="chaos-watch", daemon=True)
        self.home, self.store, self.lock_path, self.stop = home, AdapterStore(adapters), lock_path, stop
        self.tally = WatchTally()
        self._verified: dict[str, list[str]] = {}
        self._inodes: set[tuple[int, int, int]] = set()
        self._dying_since: dict[int, float] = {}  # holder pid -> first seen dying while holding

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_INTERVAL_S):
            self.sample()

    def sample(self) -> None:
        self.tally.samples += 1
        self._sample_current()
        self._sample_lock()

    # -- adapters/current ----------------------------------------------------------
    def _sample_current(self) -> None:
        link = self.store.root / "current"
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            self.tally.current_seen["none"] += 1
            return
        except OSError as exc:  # exists but is not a symlink
            self.tally.bad_current.append(f"current is not a symlink: {exc}")
            return
        adapter_id = Path(target).name
        self.tally.current_seen[adapter_id] += 1
        directory = self.store.root / adapter_id
        missing = [name for name in REQUIRED if not (directory / name).is_file()]
        if missing:
            self.tally.bad_current.append(f"current -> {target}: missing {', '.join(missing)}")
            return
        if adapter_id not in self._verified:
            self._verified[adapter_id] = self.store.verify(adapter_id)
        if self._verified[adapter_id]:
            self.tally.bad_current.append(f"current -> {adapter_id}: {'; '.join(self._verified[adapter_id])}")

    def reverify(self) -> list[str]:
        """Hash every adapter current pointed at, again (the end of the run)."""
        problems = []
        for adapter_id in self._verified:
            if (self.store.root / adapter_id).is_dir():  # retention may have removed an old one since
                problems += [f"{adapter_id}: {p}" for p in self.store.verify(adapter_id)]
        return problems

    # -- the heavy-run lock -------------------------------------------------------
    def _sample_lock(self) -> None:
        key = procs.inode_key(self.lock_path)
        if key is not None:
            self._inodes.add(key)
        if not self._inodes:
            return
        holders = procs.flock_holders(self._inodes)
        if not holders:
            return
        self.tally.lock_samples_held += 1
        if len(holders) > 1:
            self.tally.lock_conflicts.append(f"{len(holders)} holders at once: pids {holders}")
        for pid in holders:
            role = _role(pid, self.home)
            if role == "other" and pid not in procs.flock_holders(self._inodes):
                continue  # it died (and the kernel freed its lock) between the two reads
            if role == "dying":
                since = self._dying_since.setdefault(pid, time.monotonic())
                if time.monotonic() - since >= DYING_GRACE_S:
                    self.tally.lock_conflicts.append(f"pid {pid} died {DYING_GRACE_S:g}+ s ago and the "
                                                     "heavy-run lock is still held in its name")
            self.tally.lock_holders[role] += 1
            if role == "other":
                self.tally.lock_conflicts.append(f"pid {pid} holds the heavy-run lock and is no live trainer "
                                                 "or evaluator of this instance")


def _role(pid: int, home: Path) -> str:
    if procs.exiting(pid):
        return "dying"
    if not procs.references(pid, home):
        return "other"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "other"
    for module, role in HOLDER_MODULES.items():
        if module in argv:
            return role
    return "other"
