"""`circ bench NAME [ARGS...]`: run one of the benchmarks in bench/ (JSON on stdout)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from services.common.paths import REPO_ROOT

BENCH_DIR = REPO_ROOT / "bench"


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help=f"which benchmark: {', '.join(available()) or 'none found'}")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark (e.g. --quick)")


def run(args: argparse.Namespace) -> int:
    script = BENCH_DIR / f"bench_{args.name}.py"
    if not script.is_file():
        print(f"circ bench: no benchmark {args.name!r}; choose one of {', '.join(available())}", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.call([sys.executable, str(script), *args.args], env=env, cwd=REPO_ROOT)
