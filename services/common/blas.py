"""Put a fast BLAS under MLX on Linux CPUs, from Python, with no launcher changes.

The Linux ``mlx-cpu`` wheel bundles the reference (netlib) BLAS: float32 matmul
runs at a few GFLOP/s. Debian's OpenBLAS exports the same CBLAS symbols, and a
library loaded with ``RTLD_GLOBAL`` before ``libmlx.so`` is loaded wins symbol
resolution over the wheel's own copy. So: call :func:`preload_openblas` before
the first ``import mlx`` in the process (it is a no-op afterwards and says so).

``CIRCADIAN_BLAS`` selects the BLAS: ``auto`` (default: OpenBLAS when found),
``openblas`` (the same, but a miss is reported as a failed request) or
``reference`` (keep the wheel's BLAS, e.g. to measure the difference).
Pin the thread count per daemon with ``OPENBLAS_NUM_THREADS``: OpenBLAS reads
it when it is loaded, so set it before calling :func:`preload_openblas`.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import sys
import time
from pathlib import Path

import msgspec

ENV_VAR = "CIRCADIAN_BLAS"
CHOICES = ("auto", "openblas", "reference")
INSTALL_HINT = "install it with `apt-get install libopenblas0-pthread`"


class BlasInfo(msgspec.Struct, frozen=True):
    """Which BLAS MLX uses in this process, and why."""

    name: str  # "openblas" | "reference" | "accelerate"
    path: str | None
    reason: str


# The result of the first call: loading a library twice is harmless, but the
# answer must not change once mlx has been imported against it.
_result: BlasInfo | None = None


def preload_openblas() -> BlasInfo:
    """Load OpenBLAS globally before MLX is imported; return what MLX will use."""
    global _result
    if _result is None:
        from services.common.mlxjit import isolate_jit_cache

        isolate_jit_cache()
        _result = _decide()
    return _result


def _decide() -> BlasInfo:
    if sys.platform == "darwin":
        return BlasInfo("accelerate", None, "macOS: MLX uses Accelerate and Metal")
    if not sys.platform.startswith("linux"):
        return BlasInfo("reference", None, f"no BLAS preload on {sys.platform}")

    loaded = _loaded_openblas()
    if loaded is not None:
        # LD_PRELOAD or an earlier dlopen already did the job.
        return BlasInfo("openblas", loaded, "OpenBLAS was already loaded in this process")

    requested = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    note = ""
    if requested not in CHOICES:
        note = f" ({ENV_VAR}={requested!r} is not one of {'|'.join(CHOICES)}; used auto)"
        requested = "auto"
    if requested == "reference":
        return BlasInfo("reference", None, f"{ENV_VAR}=reference: kept the wheel's BLAS")
    if _mlx_imported():
        return BlasInfo(
            "reference",
            None,
            "mlx was imported before preload_openblas(): too late to swap the BLAS; "
            "call it before the first `import mlx`" + note,
        )

    path = find_openblas()
    if path is None:
        prefix = f"{ENV_VAR}=openblas but " if requested == "openblas" else ""
        return BlasInfo(
            "reference",
            None,
            f"{prefix}Debian's OpenBLAS was not found (float32 matmul will be ~30x slower): "
            f"{INSTALL_HINT}" + note,
        )
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        return BlasInfo("reference", None, f"could not load {path}: {exc}" + note)
    return BlasInfo("openblas", path, f"preloaded {path} before mlx" + note)


def _mlx_imported() -> bool:
    return "mlx" in sys.modules or "mlx.core" in sys.modules


def _multiarch() -> str:
    # Debian's library directory name, e.g. x86_64-linux-gnu or aarch64-linux-gnu.
    tag = getattr(sys.implementation, "_multiarch", None)
    return tag or f"{platform.machine()}-linux-gnu"


def find_openblas() -> str | None:
    """Path of Debian's pthread OpenBLAS, or None when it is not installed."""
    directories = [Path("/usr/lib") / _multiarch() / "openblas-pthread", Path("/usr/lib")]
    for directory in directories:
        # libblas.so.3 in openblas-pthread/ is OpenBLAS under the standard BLAS
        # soname; the versioned libopenblasp-r*.so is the same code.
        candidates = [directory / "libblas.so.3"] if directory.name == "openblas-pthread" else []
        candidates += [Path(p) for p in sorted(glob.glob(str(directory / "libopenblasp-*.so")))]
        candidates.append(directory / "libopenblas.so.0")
        for candidate in candidates:
            if candidate.is_file():
                return str(candidate)
    return None


def _loaded_openblas() -> str | None:
    """An OpenBLAS already mapped into this process (LD_PRELOAD), if any."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        path = fields[5].strip() if len(fields) == 6 else ""
        # numpy's wheel ships its own OpenBLAS with renamed symbols: not ours.
        name = os.path.basename(path)
        if "openblas" in path and "scipy_openblas" not in name and "numpy" not in path:
            if name.startswith(("libblas.so", "libopenblas")):
                return path
    return None


def probe_gflops(n: int = 512, repeats: int = 3) -> float:
    """Best float32 n x n matmul throughput (GFLOP/s) of MLX on the CPU.

    Calls :func:`preload_openblas` first, so a probe that is the process's
    first use of MLX measures the BLAS that serving will use.
    """
    preload_openblas()
    import mlx.core as mx

    with mx.stream(mx.cpu):
        a = mx.random.normal((n, n), dtype=mx.float32)
        b = mx.random.normal((n, n), dtype=mx.float32)
        mx.eval(a, b, a @ b)  # warm-up: thread pools, page faults
        best = float("inf")
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            mx.eval(a @ b)
            best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9
