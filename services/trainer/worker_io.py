"""What every worker child process shares: exit codes, the JSON-lines channel, dying with the parent.

Used by the training worker (:mod:`services.trainer.worker`) and the
paraphrase worker (:mod:`services.trainer.paraphrase_worker`); the parent
side is :mod:`services.trainer.runner`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from typing import IO, Any

import msgspec

from protocol.worker_lines import WorkerLine
from services.common import lifeline

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NO_MEMORY = 3
EXIT_STOPPED = 5
EXIT_PARENT_GONE = 6


class InputError(Exception):
    """Bad data, params, model or checkpoint: exit 2 with the reason."""


# ----------------------------------------------------------------- JSON lines out


class Emitter:
    """The JSON-lines channel to the parent: a private copy of fd 1.

    fd 1 itself is pointed at stderr, so stray prints (mlx-lm, transformers)
    can never corrupt the stream.
    """

    def __init__(self) -> None:
        self._out: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._lock = threading.Lock()

    def __call__(self, event_type: str, /, **fields: Any) -> None:
        line = json.dumps({"type": event_type, **fields}, default=str)
        problem = off_contract(line)
        if problem:  # a bug in the worker, not a reason to stop training: say it where it is read
            print(f"worker line off contract ({problem}): {line[:300]}", file=sys.stderr, flush=True)
        with self._lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (BrokenPipeError, OSError):
                os._exit(EXIT_PARENT_GONE)  # nobody is listening any more


_LINE = msgspec.json.Decoder(WorkerLine)
_FIELDS = {cls.__struct_config__.tag: set(cls.__struct_fields__) for cls in WorkerLine.__args__}  # type: ignore[attr-defined]


def off_contract(line: str) -> str:
    """'' when ``line`` is a worker line as protocol.worker_lines defines it, else what is wrong.

    The parent checks the same on its side (services.trainer.runner); checking here too names
    the worker's own bug in its stderr, next to the code that wrote it.
    """
    try:
        decoded = json.loads(line)
        kind = decoded.get("type") if isinstance(decoded, dict) else None
        if kind not in _FIELDS:
            return f"unknown line type {kind!r}"
        unknown = sorted(set(decoded) - _FIELDS[kind] - {"type"})
        if unknown:
            return f"fields not in the contract: {', '.join(unknown)}"
        _LINE.decode(line)
    except (ValueError, msgspec.ValidationError) as exc:
        return str(exc)
    return ""


# ----------------------------------------------------------------- dying with the parent


def watch_parent(fd: int, parent_pid: int | None) -> None:
    """Exit (EXIT_PARENT_GONE) when the trainer that started us is gone (services.common.lifeline)."""
    lifeline.watch_parent(fd, parent_pid, EXIT_PARENT_GONE)


def add_parent_arguments(parser: argparse.ArgumentParser) -> None:
    """The death-pipe flags every worker takes (the runner passes them)."""
    parser.add_argument("--parent-fd", type=int, default=None, help="read end of the parent's death pipe")
    parser.add_argument("--parent-pid", type=int, default=None, help="the parent's pid (race check)")


def start_child(args: argparse.Namespace) -> Emitter:
    """A worker's first moves: take over stdout, tie its life to the parent's, say hello."""
    emit = Emitter()
    if args.parent_fd is not None:
        watch_parent(args.parent_fd, args.parent_pid)
    emit("hello", pid=os.getpid())
    return emit


