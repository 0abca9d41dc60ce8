"""A child process that must not outlive its parent (DESIGN.md: supervisord does not reap grandchildren).

The parent passes the read end of a pipe whose write end only it holds; when
the parent dies, the kernel closes that end, ``read`` returns EOF, and the
child exits. On Linux ``PR_SET_PDEATHSIG`` adds a second guard (SIGKILL when
the parent thread exits). Used by the training and paraphrasing workers and
the morning report.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

# Tests set this to check the pipe guard alone.
NO_PDEATHSIG_ENV = "CIRCADIAN_WORKER_NO_PDEATHSIG"


def watch_parent(fd: int, parent_pid: int | None, exit_code: int) -> None:
    """Exit with ``exit_code`` when the parent's end of the pipe closes (or the parent is already gone)."""
    _set_pdeathsig()
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(exit_code)  # it died before the guard was set

    def watch() -> None:
        while True:
            try:
                data = os.read(fd, 4096)
            except InterruptedError:
                continue
            except OSError:
                data = b""
            if not data:
                os._exit(exit_code)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _set_pdeathsig() -> None:
    if not sys.platform.startswith("linux") or os.environ.get(NO_PDEATHSIG_ENV):
        return  # macOS has no such call: the pipe alone guards there
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the pipe watcher still guards
