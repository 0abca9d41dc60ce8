"""MLX's kernel cache is private per kind of process (services.common.mlxjit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.common.mlxjit import process_kind
from services.common.paths import REPO_ROOT

PROBE = ("from services.common.blas import preload_openblas; preload_openblas()\n"
         "import os, mlx.core as mx\n"
         "f = mx.compile(lambda x: mx.sigmoid(x) * x + 3)\n"
         "assert f(mx.ones(3)).tolist()[0] > 3\n"
         "print(os.environ['TMPDIR'])\n")


def test_process_kind_names_the_program() -> None:
    assert process_kind("/repo/services/chat/__main__.py") == "chat"
    assert process_kind("/repo/bench/bench_memory.py") == "bench_memory"
    assert process_kind("-c") == "c"
    assert process_kind("") == "python"


def test_each_kind_compiles_into_its_own_cache(tmp_path: Path) -> None:
    base = tmp_path / "jit"
    env = {**os.environ, "CIRCADIAN_MLX_JIT_BASE": str(base)}
    env.pop("CIRCADIAN_MLX_JIT_DIR", None)
    dirs = []
    for name in ("alpha.py", "beta.py"):
        script = tmp_path / name
        script.write_text(PROBE)
        out = subprocess.run([sys.executable, str(script)], env=env, cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        dirs.append(Path(out.stdout.strip()))
    assert dirs == [base / "alpha", base / "beta"]
    for directory in dirs:
        # The compiled kernel landed in the process's own cache (MLX's layout: mlx/<version>/cpu).
        assert list(directory.glob("mlx/*/cpu/*.so")), f"no compiled kernel under {directory}"
        assert oct(directory.stat().st_mode & 0o777) == "0o700"


def test_kernels_compile_after_the_memory_index_is_opened(tmp_path: Path) -> None:
    """usearch loaded before MLX breaks MLX's kernel compiler; the index loads MLX first."""
    script = tmp_path / "index_then_compile.py"
    script.write_text(
        "import sys\n"
        "from services.lib.memory.index import MemoryIndex\n"
        f"index = MemoryIndex({str(tmp_path / 'memory')!r})\n"
        "import mlx.core as mx\n"
        "f = mx.compile(lambda x: mx.sigmoid(x) * x + 3)\n"
        "print(f(mx.ones(3)).tolist()[0])\n")
    env = {**os.environ, "CIRCADIAN_MLX_JIT_BASE": str(tmp_path / "jit")}
    out = subprocess.run([sys.executable, str(script)], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip()) > 3
