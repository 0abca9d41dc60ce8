"""Append the night's line to ``data/reports/nights.jsonl`` (protocol.report_lines.NightLine).

Called once per night after the verdict (services.trainer.morning.after_night),
from what the night left behind: the sleep's state, the adapter's manifest
(the evaluator's verdict, copied there by the sleep) and the training
worker's summary (``training.json``: wall time, peak memory). Every part is
optional: a night that failed before training still gets its line, with what
is known. One ``write`` of one line on an O_APPEND descriptor, fsynced, so a
crash leaves at most a torn last line, which the reader skips and the next
append does not glue itself onto.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import msgspec

from protocol.report_lines import NightLine
from services.common.paths import Paths

SUMMARY_FILE = "training.json"  # services.trainer.checkpoints.SUMMARY_FILE (not imported: it pulls in MLX)


def nights_path(paths: Paths) -> Path:
    return paths.data / "reports" / "nights.jsonl"


def night_line(paths: Paths, state: Any, verdict: str, *, now: float | None = None) -> NightLine:
    """The line for the night ``state`` (services.trainer.sleep.SleepState) that ended in ``verdict``."""
    ended = time.time() if now is None else now
    manifest = _manifest(paths, state.adapter_id)
    evaluation = manifest.get("evaluation") if isinstance(manifest.get("evaluation"), dict) else {}
    summary = _json(paths.adapters / state.adapter_id / SUMMARY_FILE) if state.adapter_id else {}
    return NightLine(
        sleep_id=state.sleep_id, adapter_id=state.adapter_id, trigger=state.trigger, verdict=verdict,
        error=state.error if verdict == "failed" else "", started_at=round(state.started_at, 3),
        ended_at=round(ended, 3), total_s=round(max(0.0, ended - state.started_at), 1),
        train_s=_float(summary.get("duration_s")), eval_s=_float(evaluation.get("duration_s")),
        steps=int(summary.get("steps") or state.step or 0),
        final_loss=_float(summary.get("final_loss", manifest.get("final_loss"))),
        peak_memory_bytes=_int(summary.get("peak_memory_bytes")),
        metrics={str(k): float(v) for k, v in (evaluation.get("metrics") or {}).items() if _float(v) is not None},
        gates={str(k): bool(v) for k, v in (evaluation.get("gates") or {}).items()},
        reasons=[str(r) for r in evaluation.get("reasons") or []],
        canary_by_kind={str(k): float(v) for k, v in (evaluation.get("canary_by_kind") or {}).items()
                        if _float(v) is not None})


def append_night(paths: Paths, line: NightLine) -> Path:
    """Append ``line`` (one JSON object and a newline); a torn previous line is closed first."""
    path = nights_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = msgspec.json.encode(line) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and _last_byte(path, size) != b"\n":
            data = b"\n" + data  # a crash tore the last line: ours starts on a line of its own
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def record_night(paths: Paths, state: Any, verdict: str) -> Path:
    return append_night(paths, night_line(paths, state, verdict))


def _manifest(paths: Paths, adapter_id: str) -> dict[str, Any]:
    # Read the file, not AdapterStore.show: no hashing of the weights for a log line.
    return _json(paths.adapters / adapter_id / "manifest.json") if adapter_id else {}


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _last_byte(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(size - 1)
        return f.read(1)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
