"""Loading a LoRA adapter directory into the served model (unfused).

An adapter is a directory with ``adapter_config.json`` and
``adapters.safetensors`` (mlx-lm's format). It is applied unfused: fusing a
small adapter into 4-bit weights can erase it (DESIGN.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class AdapterError(Exception):
    pass


def load_adapter_into(model: Any, adapter_dir: Path) -> str:
    """Apply the adapter in ``adapter_dir`` to ``model``; return its id (the dir name)."""
    from mlx_lm.tuner.utils import load_adapters

    for name in ("adapter_config.json", "adapters.safetensors"):
        if not (adapter_dir / name).is_file():
            raise AdapterError(f"{adapter_dir / name} is missing: the adapter is incomplete; "
                               "roll back with `circ adapters rollback`")
    load_adapters(model, str(adapter_dir))
    return adapter_dir.name
