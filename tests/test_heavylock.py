"""The heavy-run lock: exclusive across processes, freed the instant its holder dies,
never kept alive by the holder's children.

Holders are real processes (``python -c``) so that the kernel's flock
semantics — not a simulation — are what the tests pin down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.heavylock import HeavyRunLock, LockError
from services.common.paths import REPO_ROOT

READY_TIMEOUT_S = 20.0

# Takes the lock as "helper-trainer", prints "locked <pid>" (and, for the
# child modes, "child <pid>"), then sleeps until killed.
HOLDER = textwrap.dedent("""
    import os, subprocess, sys, time
    from services.common.heavylock import HeavyRunLock
    lock = HeavyRunLock(sys.argv[1])
    assert lock.acquire("helper-trainer", timeout_s=10)
    mode = sys.argv[2]
    if mode == "exec-child":
        # close_fds=False: the lock's descriptor would be inherited if it
        # were not close-on-exec.
        child = subprocess.Popen(["sleep", "60"], close_fds=False)
        print("child", child.pid, flush=True)
    elif mode == "fork-child":
        # The child says when fork() has returned in it: the after-fork hooks
        # (which drop the lock) have run by then, on a loaded machine too.
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.write(w, b"x")
            os.close(w)
            time.sleep(60)
            os._exit(0)
        os.close(w)
        os.read(r, 1)
        print("child", pid, flush=True)
    print("locked", os.getpid(), flush=True)
    time.sleep(120)
""")


class Holder:
    """A helper process that holds the lock until killed."""

    def __init__(self, lock_path: Path, mode: str = "plain") -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_path), mode], cwd=REPO_ROOT,
                                     stdout=subprocess.PIPE, text=True)
        self.child_pid: int | None = None
        deadline = time.monotonic() + READY_TIMEOUT_S
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"holder exited with {self.proc.wait()} before taking the lock")
            word, pid = line.split()
            if word == "child":
                self.child_pid = int(pid)
            elif word == "locked":
                return
        raise AssertionError("holder did not take the lock in time")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill9()
        if self.child_pid is not None:
            try:
                os.kill(self.child_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:  # our grandchild is reparented, but in case it is ours to reap
                os.waitpid(self.child_pid, os.WNOHANG)
            except ChildProcessError:
                pass


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "heavy.lock"


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_exclusive_across_processes(lock_path: Path, holders: list[Holder]) -> None:
    """While another process holds it, acquire fails after its timeout and holder() names it."""
    holder = Holder(lock_path)
    holders.append(holder)
    lock = HeavyRunLock(lock_path)
    started = time.monotonic()
    assert lock.acquire("evaluator", timeout_s=0.3) is False
    assert time.monotonic() - started >= 0.25
    info = lock.holder()
    assert info is not None
    assert info["holder"] == "helper-trainer"
    assert info["pid"] == holder.proc.pid
    assert info["since"] <= time.time()


def test_freed_at_once_when_holder_is_killed(lock_path: Path, holders: list[Holder]) -> None:
    """kill -9 of the holder frees the lock immediately: the next try succeeds without waiting."""
    holder = Holder(lock_path)
    holders.append(holder)
    lock = HeavyRunLock(lock_path)
    assert lock.acquire("evaluator", timeout_s=0) is False
    holder.kill9()
    assert lock.holder() is None
    assert lock.acquire("evaluator", timeout_s=0) is True
    assert lock.holder()["holder"] == "evaluator"
    lock.release()


def test_waiting_acquire_gets_it_when_holder_dies(lock_path: Path, holders: list[Holder]) -> None:
    """A waiting acquire (no timeout) returns as soon as the holder dies."""
    holder = Holder(lock_path)
    holders.append(holder)
    lock = HeavyRunLock(lock_path)
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(lock.acquire("evaluator", timeout_s=None)))
    waiter.start()
    time.sleep(0.3)
    assert not got
    holder.kill9()
    waiter.join(5)
    assert got == [True]
    lock.release()


@pytest.mark.parametrize("mode", ["exec-child", "fork-child"])
def test_children_do_not_keep_the_lock(lock_path: Path, holders: list[Holder], mode: str) -> None:
    """A child of the holder (exec'd with close_fds=False, or a bare fork) outlives it without the lock."""
    holder = Holder(lock_path, mode)
    holders.append(holder)
    assert holder.child_pid is not None
    holder.kill9()
    assert _alive(holder.child_pid), "the child should still be running for this test to mean anything"
    lock = HeavyRunLock(lock_path)
    assert lock.holder() is None
    assert lock.acquire("evaluator", timeout_s=0) is True
    lock.release()


def test_holder_info_free_and_held_in_process(lock_path: Path) -> None:
    """holder(): None when free (even before the file exists), the name and pid while held."""
    lock = HeavyRunLock(lock_path)
    assert lock.holder() is None
    with HeavyRunLock(lock_path, holder="trainer") as held:
        assert held.held
        for probe in (lock, held):
            info = probe.holder()
            assert info is not None and info["holder"] == "trainer" and info["pid"] == os.getpid()
    assert lock.holder() is None
    assert lock_path.read_text() == "", "a released lock leaves no holder name behind"


def test_two_instances_in_one_process_exclude_each_other(lock_path: Path) -> None:
    """Trainer and evaluator code in one process still never overlap."""
    first, second = HeavyRunLock(lock_path), HeavyRunLock(lock_path)
    assert first.acquire("trainer", timeout_s=0)
    assert not second.acquire("evaluator", timeout_s=0.1)
    first.release()
    assert second.acquire("evaluator", timeout_s=0)
    second.release()


def test_not_reentrant_and_release_is_idempotent(lock_path: Path) -> None:
    lock = HeavyRunLock(lock_path)
    assert lock.acquire("trainer", timeout_s=0)
    with pytest.raises(LockError):
        lock.acquire("trainer", timeout_s=0)
    lock.release()
    lock.release()
    assert not lock.held


def test_should_stop_cancels_a_wait(lock_path: Path) -> None:
    """A shutdown request ends a wait for the lock (instead of waiting the full timeout)."""
    holder = HeavyRunLock(lock_path)
    assert holder.acquire("trainer", timeout_s=0)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert HeavyRunLock(lock_path).acquire("evaluator", timeout_s=30, should_stop=stop.is_set) is False
    assert time.monotonic() - started < 5
    holder.release()


def test_descriptor_is_close_on_exec(lock_path: Path) -> None:
    lock = HeavyRunLock(lock_path)
    assert lock.acquire("trainer", timeout_s=0)
    try:
        assert lock._fd is not None and not os.get_inheritable(lock._fd)
    finally:
        lock.release()
