"""The files a run leaves in ``--out``: checkpoints while it runs, the adapter and summary after.

Every write is atomic and durable (temp file, fsync, rename, fsync the
directory); a checkpoint's index is written after its weights, so the
index is the commit point and always names a complete file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from services.common.atomic import fsync_dir, write_atomic
from services.common.digest import file_sha256
from services.trainer.params import TrainParams
from services.trainer.train_data import data_fingerprint

ADAPTER_FILE = "adapters.safetensors"
CONFIG_FILE = "adapter_config.json"
SUMMARY_FILE = "training.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_INDEX = "checkpoint.json"


def save_weights_atomic(path: Path, weights: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    """mx.save_safetensors to a temp file, fsync, rename, fsync the directory."""
    import mlx.core as mx

    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        mx.save_safetensors(handle, weights, metadata=metadata or {})
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_checkpoint(out_dir: Path, step: int, weights: dict[str, Any], key: dict[str, Any],
                     curve: list[list[float]] | None = None, checks: list[list[float]] | None = None) -> Path:
    """The weights, then an index naming them (the commit point), then old weights go.

    ``checks``: the stop rule's checks so far (services.trainer.stop_rule), so a resumed run decides the same.
    """
    directory = out_dir / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{step:07d}.safetensors"
    save_weights_atomic(path, weights)
    index = {"step": step, "file": path.name, "sha256": file_sha256(path), "key": key, "ts": time.time(),
             "loss_curve": curve or [], "checks": checks or []}
    write_atomic(directory / CHECKPOINT_INDEX, json.dumps(index, indent=2).encode(), mode=0o644)
    for old in directory.glob("step-*.safetensors"):  # keep the one the index names
        if old.name != path.name:
            old.unlink(missing_ok=True)
    return path


def read_checkpoint(out_dir: Path, key: dict[str, Any]) -> tuple[dict[str, Any] | None, Path | None, str]:
    """(index, weights file, note) of a checkpoint resumable under ``key``; (None, None, why) otherwise."""
    directory = out_dir / CHECKPOINT_DIR
    try:
        index = json.loads((directory / CHECKPOINT_INDEX).read_text())
    except FileNotFoundError:
        return None, None, "no checkpoint: starting at step 0"
    except (OSError, ValueError) as exc:
        return None, None, f"checkpoint index unreadable ({exc}): starting at step 0"
    path = directory / str(index.get("file", ""))
    if index.get("key") != key:
        return None, None, "the checkpoint was made with other data or parameters: starting at step 0"
    if not path.is_file() or path.parent != directory or file_sha256(path) != index.get("sha256"):
        return None, None, "the checkpoint's weights are missing or corrupt: starting at step 0"
    return index, path, f"resuming from the checkpoint at step {index['step']}"


def remove_checkpoints(out_dir: Path) -> None:
    """Drop ``out_dir``'s checkpoints (a fresh run, or a finished one whose final files are durable)."""
    import shutil

    shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)


def finished_summary(out_dir: Path, key_params: TrainParams, data_dir: Path) -> dict[str, Any] | None:
    """The summary of a run that already finished into ``out_dir`` with these params and data."""
    try:
        summary = json.loads((out_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    key = summary.get("key", {})
    stop = summary.get("stop_key", {"steps": summary.get("steps")})  # older summaries: a fixed step count
    wanted = key_params.stop_key() if "stop_key" in summary else {"steps": key_params.steps}
    same = (isinstance(key, dict) and stop == wanted
            and all(key.get(k) == v for k, v in key_params.trajectory_key().items())
            and key.get("data_sha256") == data_fingerprint(data_dir))
    complete = (out_dir / ADAPTER_FILE).is_file() and (out_dir / CONFIG_FILE).is_file()
    return summary if same and complete else None


