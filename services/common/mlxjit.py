"""A private directory for MLX's CPU kernel compiler, per kind of process.

MLX's CPU backend compiles fused kernels with g++ on first use and caches
them in ``$TMPDIR/mlx/<version>/cpu``, writing each source file under a
fixed name. Two processes compiling the same kernel at the same moment
(chat and ingest starting together on a fresh machine, the evaluator and a
benchmark) truncate each other's source and one of them fails with
``Failed to compile function``. Giving each kind of process (chat, ingest,
the training worker, a benchmark, ...) its own cache keeps the cache — a
restarted daemon reuses its kernels — without the race.

Only MLX's view of ``TMPDIR`` changes: Python's ``tempfile`` has already
fixed its directory before we set it.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

ENV_VAR = "CIRCADIAN_MLX_JIT_DIR"
BASE_VAR = "CIRCADIAN_MLX_JIT_BASE"


def process_kind(argv0: str | None = None) -> str:
    """``services/chat/__main__.py`` -> ``chat``; ``bench/bench_memory.py`` -> ``bench_memory``."""
    path = Path(argv0 if argv0 is not None else (sys.argv[0] if sys.argv and sys.argv[0] else "python"))
    name = path.parent.name if path.stem == "__main__" else path.stem
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip("-.")[:64] or "python"


def isolate_jit_cache() -> Path | None:
    """Point MLX's compiler at ``<tmp>/circadian-mlx-<uid>/<kind>`` (once, before MLX compiles)."""
    if sys.platform == "darwin":
        return None  # Metal kernels are not compiled through $TMPDIR
    tempfile.gettempdir()  # fixes Python's own temp dir first
    # Inherited by child processes, so theirs sit beside ours, not inside it.
    base = os.environ.setdefault(BASE_VAR, str(Path(tempfile.gettempdir()) / f"circadian-mlx-{os.getuid()}"))
    explicit = os.environ.get(ENV_VAR)
    target = Path(explicit) if explicit else Path(base) / process_kind()
    try:
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return None  # MLX falls back to the shared directory: slower to be safe about, not broken
    os.environ["TMPDIR"] = str(target)
    return target
