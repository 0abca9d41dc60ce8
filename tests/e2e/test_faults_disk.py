"""The disk fills under the event log, through the real daemons (issue 15, part 2).

The instance runs in a private mount namespace (``unshare -m``; ``-r`` too
when not root) with a 16 MB tmpfs on ``data/events``: a real filesystem that
really fills, seen by no other process on the machine and gone with the
instance. The test fills it with a file it writes through
``/proc/<supervisord>/root`` (the namespace's view), then removes the file:
chat refuses new turns with "disk full: free space under <dir>", an append
that needs new space gets ``disk_full`` from the eventlog, no daemon
restarts, every event acknowledged before is kept, and the next turn after
the space returns is logged with the next seq. Where namespaces or tmpfs
mounts are not allowed (a container without CAP_SYS_ADMIN and no user
namespaces), the test skips saying so; tests/test_faults.py drives the same
code with a real SQLITE_FULL in any case.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.envelope import new_envelope
from protocol.events import ServiceStarted
from services.common.eventlog_client import EventlogClient
from services.common.rpc import RemoteError

from .harness import CIRC, TURN_TYPE, UP_TIMEOUT_S, Instance, make_home, parse_json_lines, pid_alive

pytestmark = pytest.mark.e2e

TMPFS_MB = 16
MOUNT = 'mount -t tmpfs -o size={mb}m,mode=0700 circadian-faults "$1"'


def _unshare() -> list[str]:
    exe = shutil.which("unshare")
    if exe is None:
        pytest.skip("needs util-linux `unshare` for a private tmpfs (a filesystem the test can fill)")
    flags = ["-m", "--propagation", "private"] if os.geteuid() == 0 else ["-r", "-m", "--propagation", "private"]
    probe_dir = make_home()
    try:
        probe = subprocess.run([exe, *flags, "sh", "-c", MOUNT.format(mb=1), "sh", str(probe_dir)],
                               capture_output=True, text=True, timeout=30)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private tmpfs here ({' '.join(flags)}: {probe.stderr.strip()}); "
                    "tests/test_faults.py covers the same code with SQLITE_FULL")
    return [exe, *flags]


@pytest.fixture(scope="module")
def small_disk() -> Iterator[tuple[Instance, Path, Path]]:
    """(instance, data/events as the daemons see it, the namespace's root as seen from here)."""
    unshare = _unshare()
    home = make_home()
    inst = Instance(home)
    events_dir = inst.paths.events_db.parent
    events_dir.mkdir(parents=True, mode=0o700)
    try:
        script = MOUNT.format(mb=TMPFS_MB) + f' && exec "$2" up --timeout {UP_TIMEOUT_S - 10:g}'
        up = inst.run(Path(unshare[0]), *unshare[1:], "sh", "-c", script, "sh", str(events_dir), str(CIRC),
                      timeout_s=UP_TIMEOUT_S)
        inst._remember_pids()
        assert up.returncode == 0, f"circ up in a namespace failed:\n{up.stderr}\n{inst.logs()}"
        supervisord = int((inst.paths.run / "supervisord.pid").read_text().strip())
        yield inst, events_dir, Path(f"/proc/{supervisord}/root")
    finally:
        inst.teardown()
        shutil.rmtree(home, ignore_errors=True)


def _chat(inst: Instance, message: str) -> subprocess.CompletedProcess[str]:
    return inst.chat("--json", "--temperature", "0", "--max-tokens", "4", "--no-recall", "--message", message)


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem says ENOSPC; return it."""
    filler = directory / "filler"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb", buffering=0) as f:
        while chunk:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                chunk = chunk[:len(chunk) // 2]
    assert shutil.disk_usage(directory).free < 64 * 1024
    return filler


def _turn_seqs(inst: Instance) -> list[int]:
    """The turns in the log, read through the eventlog (the file is on the namespace's tmpfs)."""
    client = EventlogClient(inst.paths, timeout_s=30)
    try:
        return [e.seq for e in client.replay(0, limit=1000, types=[TURN_TYPE]).events]
    finally:
        client.close()


@pytest.mark.timeout(600)
def test_a_full_disk_refuses_turns_clearly_loses_nothing_and_recovers(small_disk: tuple[Instance, Path, Path]) -> None:
    inst, events_dir, ns_root = small_disk
    inside = Path(f"{ns_root}{events_dir}")  # data/events on the tmpfs, as seen from here
    assert shutil.disk_usage(inside).total <= TMPFS_MB * 1_100_000, "the log is not on the small tmpfs"
    pids = {name: inst.pid(name) for name in ("eventlog", "chat")}
    first = _chat(inst, "Before the disk fills: say hi.")
    assert first.returncode == 0, first.stderr
    [before] = parse_json_lines(first.stdout)

    filler = _fill(inside)
    refused = _chat(inst, "The disk is full now: say hi.")
    assert refused.returncode != 0, refused.stdout
    assert f"disk full: free space under {events_dir}" in refused.stderr, refused.stderr
    # An append that needs new space (more than the WAL already holds) reaches SQLite and fails there.
    client = EventlogClient(inst.paths, timeout_s=30)
    try:
        big = new_envelope(ServiceStarted(service="test", pid=0, version="0", details={"pad": "x" * (3 << 20)}),
                           source="test")
        with pytest.raises(RemoteError) as full:
            client.append([big])
        assert full.value.code == "disk_full", full.value
        assert full.value.reply.message.startswith(f"disk full: free space under {events_dir}"), full.value
    finally:
        client.close()
    for name, pid in pids.items():  # no crash, no restart loop
        assert pid_alive(pid) and inst.pid(name) == pid, f"{name} was restarted on a full disk"
    assert _turn_seqs(inst) == [before["seq"]], "an acknowledged turn was lost"

    filler.unlink()  # the space returns
    after = _chat(inst, "The disk has room again: say hi.")
    assert after.returncode == 0, after.stderr
    [record] = parse_json_lines(after.stdout)
    assert record["seq"] > before["seq"]
    assert _turn_seqs(inst) == [before["seq"], record["seq"]], "a refused turn was logged"
    # `circ log verify` where the daemons are, to read the file on the tmpfs (as a user would).
    nsenter = shutil.which("nsenter")
    assert nsenter, "util-linux nsenter (beside unshare) is missing"
    target = ["-t", ns_root.parent.name, "-m"] + ([] if os.geteuid() == 0 else ["-U", "--preserve-credentials"])
    verify = inst.run(Path(nsenter), *target, str(CIRC), "log", "verify")
    assert verify.returncode == 0 and verify.stdout.startswith("ok:"), verify.stdout + verify.stderr
