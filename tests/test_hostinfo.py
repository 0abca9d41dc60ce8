"""Platform branches (services.common.hostinfo): each fed another platform's query answer."""

from __future__ import annotations

import os
import sqlite3
import sys

from services.common import hostinfo
from services.common.paths import MAX_SOCKET_PATH_BYTES


def test_socket_path_limit_per_platform():
    assert hostinfo.socket_path_limit("darwin") == 104
    assert hostinfo.socket_path_limit("linux") == 108
    assert hostinfo.socket_path_limit("freebsd14") == 104
    # paths.py keeps every socket path under the smallest limit (macOS's), NUL included.
    assert MAX_SOCKET_PATH_BYTES < min(hostinfo.SOCKET_PATH_LIMITS.values())


def test_socket_path_limit_matches_this_os(tmp_path):
    """A path of limit-1 bytes binds here; the real OS is the judge, not a table."""
    import socket

    limit = hostinfo.socket_path_limit()
    base = os.fsencode(tmp_path)
    name = b"/" + b"s" * (limit - 1 - len(base) - 1)
    if len(base) + 2 > limit - 1:
        print(f"tmp path {tmp_path} too long to probe the socket limit")
        return
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(base + name)
    finally:
        sock.close()


def test_sqlite_durability_pragmas():
    assert "PRAGMA fullfsync=ON" in hostinfo.sqlite_durability_pragmas("darwin")
    assert "PRAGMA fullfsync=ON" not in hostinfo.sqlite_durability_pragmas("linux")
    conn = sqlite3.connect(":memory:")
    for pragma in hostinfo.sqlite_durability_pragmas("darwin"):
        conn.execute(pragma)  # valid SQL on every SQLite (a no-op off macOS)


def test_reads_proc():
    assert hostinfo.reads_proc("linux")
    assert not hostinfo.reads_proc("darwin")
    assert hostinfo.reads_proc() == os.path.isfile("/proc/meminfo")


def test_accelerator_memory_branches():
    gb = 2**30
    assert hostinfo.accelerator_memory_bytes(("metal", {"memory_size": 16 * gb,
                                                        "max_recommended_working_set_size": 11 * gb})) == (
        11 * gb, "metal recommended working set")
    assert hostinfo.accelerator_memory_bytes(("cuda", {"total_memory": 80 * gb}))[0] == 80 * gb
    # NVML's free memory, when MLX reports it, is what another process leaves us.
    assert hostinfo.accelerator_memory_bytes(("cuda", {"total_memory": 80 * gb, "free_memory": 30 * gb})) == (
        30 * gb, "cuda free device memory")
    assert hostinfo.accelerator_memory_bytes(("cuda", {}))[0] is None
    assert hostinfo.accelerator_memory_bytes(("cpu", {}))[0] is None


def test_real_query_on_this_machine():
    backend, _info = hostinfo.mlx_backend_query()
    assert backend in ("cpu", "metal", "cuda", "gpu")
    facts = hostinfo.describe()
    assert facts["platform"] == sys.platform


def test_the_training_memory_check_on_the_quantized_path_asks_the_device_then_ram():
    """On the CPU backend the device has no memory of its own: the quantized path's budget is RAM."""
    from services.trainer.memory_budget import available_memory_bytes

    on_device, _source = hostinfo.accelerator_memory_bytes()
    available, source = available_memory_bytes("quantized")
    if on_device is None:
        assert source == available_memory_bytes("float32")[1]  # the same RAM figure as the float32 path
        assert available is None or available > 0
    else:
        assert available == on_device
