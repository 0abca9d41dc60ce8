"""Where circadian keeps its files.

``CIRCADIAN_HOME`` selects the directory that holds ``data/`` and
``adapters/`` (default: the repository), so several instances — and every
test — get their own log, sockets and adapters. Converted models are shared
between homes (``CIRCADIAN_MODELS``, default ``<repo>/models``): they are big
and read-only.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Unix socket paths are limited to 104 bytes on macOS (108 on Linux).
MAX_SOCKET_PATH_BYTES = 100


@dataclass(frozen=True)
class Paths:
    home: Path

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def events_db(self) -> Path:
        return self.data / "events" / "events.db"

    @property
    def state(self) -> Path:
        return self.data / "state"

    @property
    def memory(self) -> Path:
        return self.data / "memory"

    @property
    def keys(self) -> Path:
        """Secrets ingest derives state with (services/lib/privacy/names.py); not part of the index."""
        return self.data / "keys"

    @property
    def logs(self) -> Path:
        return self.data / "logs"

    @property
    def adapters(self) -> Path:
        return self.home / "adapters"

    @property
    def run(self) -> Path:
        """Private directory for sockets and pid files (mode 0700).

        When the home is so deep that socket paths would pass the OS limit,
        the run directory moves to a short per-home path under the temp dir.
        """
        preferred = self.data / "run"
        longest = preferred / "supervisor.sock"
        if len(os.fsencode(longest)) <= MAX_SOCKET_PATH_BYTES:
            return preferred
        digest = hashlib.sha256(os.fsencode(self.home)).hexdigest()[:12]
        # /tmp itself, not $TMPDIR: every process must agree on this path, and
        # a process's TMPDIR may be private (services.common.mlxjit).
        base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
        return Path(base) / f"circadian-{os.getuid()}-{digest}"

    def endpoint(self, name: str) -> str:
        """The ipc:// endpoint of socket ``name`` (e.g. ``chat.ctl``)."""
        return f"ipc://{self.run / name}.sock"

    def ensure(self) -> Paths:
        """Create the directories, with the run directory private (0700)."""
        for directory in (self.events_db.parent, self.state, self.memory, self.logs, self.adapters):
            directory.mkdir(parents=True, exist_ok=True)
        ensure_private_dir(self.run)
        return self


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700 and tighten it if it already existed."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o777 != 0o700:
        path.chmod(0o700)


def home_from_env() -> Path:
    raw = os.environ.get("CIRCADIAN_HOME")
    return Path(raw).expanduser().resolve() if raw else REPO_ROOT


def current_paths() -> Paths:
    return Paths(home_from_env())


def models_dir() -> Path:
    raw = os.environ.get("CIRCADIAN_MODELS")
    return Path(raw).expanduser().resolve() if raw else REPO_ROOT / "models"


def resolve_model_dir(name: str) -> Path:
    """A model setting (``chat.model``) is a path, or a name under the models directory."""
    candidate = Path(name).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate.resolve()
    return models_dir() / name


def anchor_cache_dir() -> Path:
    """Where the base models' anchor replies are cached (services.trainer.anchors); beside the models."""
    return models_dir() / ".cache" / "anchors"


def paraphrase_cache_dir() -> Path:
    """Where the models' paraphrases of fact questions are cached (services.trainer.paraphrase)."""
    return models_dir() / ".cache" / "paraphrases"
