"""This instance's processes, found in /proc by the CIRCADIAN_HOME in their environment.

Pids get reused after kill -9, so a pid is only "ours" while its environment
names our home; the training worker is recognised by its module name.
"""

from __future__ import annotations

import os
from pathlib import Path

WORKER_MODULE = b"services.trainer.worker"


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


PF_EXITING = 0x4  # include/linux/sched.h: the task is in do_exit


def exiting(pid: int) -> bool:
    """Dying or dead: a zombie, gone, or in do_exit (PF_EXITING).

    A process killed with -9 first drops its memory (then /proc/PID/cmdline
    and environ read empty) and only later closes its files, which is when
    the kernel frees its flocks; with a large address space on a loaded
    machine that takes a noticeable time.
    """
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return True
    try:
        return bool(int(fields[6]) & PF_EXITING)
    except (IndexError, ValueError):
        return False


def references(pid: int, home: Path) -> bool:
    """Whether the process's environment or command line names ``home``."""
    marker = str(home).encode()
    for name in ("environ", "cmdline"):
        try:
            if marker in Path(f"/proc/{pid}/{name}").read_bytes():
                return True
        except OSError:
            continue
    return False


def ours(home: Path, exclude: set[int] = frozenset()) -> list[tuple[int, str]]:
    """(pid, command line) of every live process that references ``home``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        pid = int(entry.name)
        if alive(pid) and references(pid, home):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            found.append((pid, cmd.strip()[:200]))
    return found


def workers(home: Path) -> list[tuple[int, int]]:
    """(pid, ppid) of every live training worker of this instance."""
    marker = f"CIRCADIAN_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if WORKER_MODULE not in (entry / "cmdline").read_bytes().split(b"\0"):
                continue
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
        except OSError:
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and fields[0] != "Z":
            found.append((int(entry.name), int(fields[1])))
    return found


def flock_holders(inodes: set[tuple[int, int, int]]) -> list[int]:
    """Pids the kernel lists (/proc/locks) as holding a FLOCK on one of ``inodes`` (major, minor, ino).

    Waiters (lines with ``->``) are not holders; the heavy-run lock never
    blocks in flock anyway (it polls with LOCK_NB).
    """
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    holders = []
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK" or parts[3] != "WRITE":
            continue  # waiters ("->"), record locks, and holder() probes (shared) are not holders
        try:
            major, minor, ino = parts[5].split(":")
            key = (int(major, 16), int(minor, 16), int(ino))
        except ValueError:
            continue
        if key in inodes:
            holders.append(int(parts[4]))
    return holders


def inode_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
