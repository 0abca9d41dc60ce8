"""A closed pipe on stdout ends a command quietly (`circ log export | head -1`).

Python ignores SIGPIPE, so writing to a pipe whose reader has gone raises
BrokenPipeError: from the command itself, or, if the text was still buffered,
from the final flush at interpreter exit, where all Python can do is print
"Exception ignored ... BrokenPipeError". Both end here instead: no traceback,
and exit code 0 — the reader took what it wanted — as `circ log` and
`circ redact` already did for the pipes they caught themselves.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_BROKEN_PIPE = 0


def quiet_on_broken_pipe(main: Callable[[], int]) -> int:
    """Run ``main``; if its output pipe closes, exit quietly with EXIT_BROKEN_PIPE."""
    try:
        try:
            return main()
        finally:
            # Flush while we can still catch the error (also after SystemExit,
            # e.g. argparse's --help), not at interpreter exit.
            sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _discard_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout replaced or already closed: nothing left to flush
        pass
