"""What this platform is, one small function per platform branch (issue 16).

Each function takes the platform query's answer as an argument whose default
is the real query (``sys.platform``, MLX's device info), so a unit test can
pass another platform's answer and check the branch, with nothing else faked.
No MLX import at module level: the trainer's memory check runs before MLX.
"""

from __future__ import annotations

import sys
from typing import Any

# sockaddr_un.sun_path: 104 bytes on macOS and the BSDs, 108 on Linux.
SOCKET_PATH_LIMITS = {"darwin": 104, "linux": 108}


def socket_path_limit(platform: str | None = None) -> int:
    """Longest Unix socket path (bytes, with the NUL) the OS accepts; 104 when unknown."""
    platform = sys.platform if platform is None else platform
    for prefix, limit in SOCKET_PATH_LIMITS.items():
        if platform.startswith(prefix):
            return limit
    return 104  # the smaller, so an unknown Unix errs on the safe side


def sqlite_durability_pragmas(platform: str | None = None) -> list[str]:
    """PRAGMAs that make a committed SQLite write reach the disk on this OS.

    macOS's fsync() leaves data in the drive's cache; only F_FULLFSYNC
    (SQLite's ``fullfsync``) flushes it.
    """
    platform = sys.platform if platform is None else platform
    pragmas = ["PRAGMA synchronous=FULL"]
    if platform == "darwin":
        pragmas.append("PRAGMA fullfsync=ON")
    return pragmas


def reads_proc(platform: str | None = None) -> bool:
    """Whether /proc (meminfo, PID maps) exists: Linux only; macOS has sysctl."""
    platform = sys.platform if platform is None else platform
    return platform.startswith("linux")


def mlx_backend_query() -> tuple[str, dict[str, Any]]:
    """The real platform query: MLX's default device kind and its device info."""
    import mlx.core as mx

    if mx.default_device().type == mx.DeviceType.cpu:
        return "cpu", {}
    if mx.metal.is_available():
        return "metal", dict(mx.metal.device_info())
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        info = getattr(mx, "device_info", None)
        return "cuda", dict(info()) if callable(info) else {}
    return "gpu", {}


def accelerator_memory_bytes(query: tuple[str, dict[str, Any]] | None = None) -> tuple[int | None, str]:
    """Memory the model and training live in when they are on an accelerator.

    - cpu: None (system RAM is the budget: /proc/meminfo or sysctl).
    - metal (unified memory): the GPU's recommended working set, which is
      smaller than the RAM (about 2/3 to 3/4 of it): past it Metal pages.
    - cuda: the card's own memory (the host RAM does not bound it).
    """
    backend, info = mlx_backend_query() if query is None else query
    if backend == "metal":
        size = info.get("max_recommended_working_set_size") or info.get("memory_size")
        return (int(size), "metal recommended working set") if size else (None, "metal: no device info")
    if backend == "cuda":
        # MLX's CUDA device_info (mlx/backend/gpu/device_info.h): free_memory from NVML
        # (what other processes leave us), else the card's total.
        free = info.get("free_memory")
        if free:
            return int(free), "cuda free device memory"
        size = info.get("total_memory") or info.get("memory_size")
        return (int(size), "cuda device memory") if size else (None, "cuda: no device info")
    return None, f"{backend}: system memory"


def describe() -> dict[str, Any]:
    """One line of facts for `circ doctor` and the GPU notes."""
    memory, source = accelerator_memory_bytes()
    return {"platform": sys.platform, "socket_path_limit": socket_path_limit(), "reads_proc": reads_proc(),
            "sqlite": sqlite_durability_pragmas(), "accelerator_memory": memory, "accelerator_source": source}
