"""Is there room to log a turn? chat asks before it generates one.

The event log is where a turn becomes durable; on a full disk its commit
fails (services.lib.eventstore.store.LogFull) and the reply the model
generated would be lost work. So chat refuses a new turn up front while the
log's filesystem has less than :data:`LOG_RESERVE_BYTES` free: a few MB,
enough for hundreds of turns, far under ``alerts.min_free_mb``, which warns
long before (README "Reliability"). statvfs is a cheap call (microseconds),
made once per message.
"""

from __future__ import annotations

import shutil
from pathlib import Path

LOG_RESERVE_BYTES = 4 << 20


def log_space_problem(where: Path, reserve_bytes: int = LOG_RESERVE_BYTES) -> str | None:
    """What to tell the user when ``where`` has less than ``reserve_bytes`` free, else None."""
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return None  # cannot tell (the directory is gone): the log's own commit will say
    if free >= reserve_bytes:
        return None
    return (f"disk full: free space under {where} ({free / 1e6:.1f} MB free; a turn is logged only with at "
            f"least {reserve_bytes / 1e6:.0f} MB): the message was not answered, send it again once there is space")
