"""A program on a pseudo-terminal (stdlib ``pty``), driven as a person at a terminal would."""

from __future__ import annotations

import codecs
import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time
from pathlib import Path

from services.common.paths import REPO_ROOT

WAIT_S = 60.0  # for any single line of output: a hang fails, slowness does not

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")


class Terminal:
    """A program (``argv``) on a pseudo-terminal: a controlling tty, readline, Ctrl-C as a key."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path = REPO_ROOT) -> None:
        env = {**env, "TERM": "dumb", "INPUTRC": os.devnull}
        pid, fd = pty.fork()
        if pid == 0:  # the child: exec at once
            try:
                # As a user's shell leaves it: a run started in the background (nohup ... &)
                # inherits SIGINT ignored, and Ctrl-C would never reach circ-chat.
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.chdir(cwd)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
        self.text = ""  # everything shown so far, escapes and carriage returns removed
        self.pos = 0  # what expect() has consumed
        self.returncode: int | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._eof = False

    def _read(self, timeout_s: float) -> bool:
        if self._eof or not select.select([self.fd], [], [], timeout_s)[0]:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if not data:
            self._eof = True
            return False
        self.text += _ESCAPES.sub("", self._decoder.decode(data))
        return True

    def expect(self, pattern: str, timeout_s: float = WAIT_S) -> re.Match[str]:
        """Wait for ``pattern`` (a regex) after what was already matched; consume up to its end."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while True:
            match = regex.search(self.text, self.pos)
            if match:
                self.pos = match.end()
                return match
            if self._eof or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} on the terminal; it shows:\n{self.text[self.pos:][-3000:]}")
            self._read(0.2)

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def press(self, key: bytes) -> None:
        os.write(self.fd, key)

    def wait(self, timeout_s: float = WAIT_S) -> int:
        deadline = time.monotonic() + timeout_s
        while self.returncode is None:
            self._read(0.1)  # keep draining: a full terminal buffer would block the child
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                raise AssertionError(f"the program is still running; the terminal shows:\n{self.text[-3000:]}")
        while self._read(0.1):
            pass
        return self.returncode

    def close(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)
