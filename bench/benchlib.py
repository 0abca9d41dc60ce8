"""Small helpers shared by the benchmarks in bench/ (no MLX import here).

Every benchmark prints exactly one JSON object on stdout; progress and errors
go to stderr. A missing or broken model is one line on stderr and exit 1.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def progress(*parts: Any) -> None:
    print("[bench]", *parts, file=sys.stderr, flush=True)


def fail(prog: str, message: str, code: int = 1) -> None:
    """One line on stderr, then exit: the caller sees what to fix, not a traceback."""
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def resolve_model_or_exit(prog: str, override: str | None) -> Path:
    """The chat model directory (config, or ``--model``), validated without importing MLX."""
    if override:
        # The daemons read the same override from the environment.
        os.environ["CIRCADIAN_CHAT_MODEL"] = override
    from services.common.config import ConfigError, load_config
    from services.common.paths import resolve_model_dir
    from services.lib.models.validate import ModelError, validate_model_dir

    try:
        model_dir = resolve_model_dir(load_config().chat.model)
        validate_model_dir(model_dir)
    except (ModelError, ConfigError) as exc:
        fail(prog, f"model not usable: {exc}")
    return model_dir


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2), flush=True)


def cpu_pressure() -> dict[str, float] | None:
    """Linux PSI "some" CPU pressure (% of time a task waited for a CPU), or None."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = dict(item.split("=") for item in line.split()[1:])
    return {k: float(fields[k]) for k in ("avg10", "avg60") if k in fields}


def machine_load() -> dict[str, Any]:
    """What else the machine was doing: benchmarks on a shared box need this next to the numbers."""
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "cpu_pressure_pct": cpu_pressure(),
            "cpus": os.cpu_count()}


def wait_quiet(max_wait_s: float, threshold_pct: float = 20.0) -> dict[str, Any]:
    """Wait up to ``max_wait_s`` for CPU pressure (avg10) to drop under ``threshold_pct``."""
    import time

    started = time.monotonic()
    while True:
        pressure = cpu_pressure()
        quiet = pressure is None or pressure.get("avg10", 0.0) < threshold_pct
        waited = time.monotonic() - started
        if quiet or waited >= max_wait_s:
            return {"waited_s": round(waited, 1), "quiet": quiet, "threshold_pct": threshold_pct}
        progress(f"waiting for a quieter machine (cpu pressure avg10 {pressure['avg10']}%)")
        time.sleep(10)


def circ(command: str, env: dict[str, str]) -> int:
    """`bin/circ COMMAND` with its output on stderr (stdout is the benchmark's JSON)."""
    import subprocess

    return subprocess.run([str(REPO_ROOT / "bin" / "circ"), command], env=env,
                          stdout=sys.stderr, stderr=sys.stderr).returncode


def run_with_daemons(prog: str, home: Path, keep_home: bool, body: Any) -> Any:
    """`circ up` in ``home`` (CIRCADIAN_HOME already set), ``body()``, then `circ down` always.

    The home is removed afterwards unless ``keep_home`` or `circ up` failed
    (its logs say why).
    """
    import shutil

    env = dict(os.environ)
    keep = keep_home
    progress(f"starting daemons in {home}")
    try:
        if circ("up", env) != 0:
            keep = True
            fail(prog, f"`circ up` failed; see the logs in {home / 'data' / 'logs'}")
        return body()
    finally:
        progress("stopping daemons")
        circ("down", env)
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
