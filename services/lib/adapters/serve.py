"""The served adapter: load at start, hot-swap on promotion, refuse corrupt ones.

An adapter is a directory with ``adapter_config.json``,
``adapters.safetensors`` and ``manifest.json`` (sha256 of every file, written
by the trainer's AdapterStore). It is applied unfused: fusing a small
adapter into 4-bit weights can erase it (DESIGN.md). Everything here runs
on chat's model thread, between requests. Applying and removing is
:mod:`services.lib.adapters.apply`, the code the evaluator measures with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.lib.adapters.apply import AdapterInvalid, apply_adapter, remove_adapter
from services.lib.adapters.store import AdapterStore


class AdapterError(Exception):
    pass


@dataclass(frozen=True)
class SwapOutcome:
    adapter_id: str | None
    previous_id: str | None
    reload_ms: float
    changed: bool


def current_target(adapters_root: Path) -> tuple[str | None, Path | None]:
    """What ``adapters/current`` points to: (id, directory), or (None, None) for the base model."""
    link = adapters_root / "current"
    if not link.exists():
        return None, None
    target = link.resolve()
    return target.name, target


def verify(adapters_root: Path, adapter_id: str) -> list[str]:
    """Problems with the adapter's files (empty when every hash matches)."""
    return AdapterStore(adapters_root).verify(adapter_id)


def load_adapter_into(model: Any, adapter_dir: Path) -> str:
    """Apply the adapter in ``adapter_dir`` to ``model``; return its id (the dir name)."""
    try:
        apply_adapter(model, adapter_dir, role="served")
    except AdapterInvalid as exc:
        raise AdapterError(f"{exc}; roll back with `circ adapters rollback`") from None
    return adapter_dir.name


def swap(model: Any, adapters_root: Path, served_id: str | None) -> SwapOutcome:
    """Serve whatever ``adapters/current`` names now; keep the old adapter on any failure."""
    started = time.perf_counter()
    target_id, target_dir = current_target(adapters_root)
    if target_id == served_id:
        return SwapOutcome(served_id, served_id, 0.0, False)
    if target_id is not None:
        problems = verify(adapters_root, target_id)
        if problems:
            raise AdapterError(f"adapter {target_id} failed its hash check ({'; '.join(problems[:3])}); "
                               f"still serving {served_id or 'the base model'}")
    remove_adapter(model)
    try:
        if target_dir is not None:
            load_adapter_into(model, target_dir)
    except Exception as exc:
        remove_adapter(model)
        if served_id is not None:  # put the old one back
            load_adapter_into(model, adapters_root / served_id)
        raise AdapterError(f"adapter {target_id} could not be loaded ({exc}); "
                           f"still serving {served_id or 'the base model'}") from exc
    return SwapOutcome(target_id, served_id, (time.perf_counter() - started) * 1000, True)
