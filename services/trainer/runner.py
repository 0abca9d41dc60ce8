"""Parent side of the training worker: spawn it, stream its progress, stop it, reap it.

The worker (``python -m services.trainer.worker``) runs MLX in its own
process so the memory of a training run goes back to the OS when it ends,
and the trainer daemon itself never imports MLX. The two are tied together:

- a *death pipe*: the worker gets the read end (``--parent-fd``), only this
  process holds the write end (non-inheritable, so no other child keeps
  it). When this process dies, however it dies, the kernel closes the
  write end and the worker's watcher thread exits it; the worker also asks
  Linux for SIGKILL on its parent's death (``PR_SET_PDEATHSIG``);
- ``should_stop()`` is polled; when it turns true the worker gets SIGTERM,
  saves a checkpoint and exits 5, or is killed after ``stop_grace_s``;
- an exception here (a failing callback, KeyboardInterrupt) kills and reaps
  the worker before it propagates: no orphan, ever.

The worker never holds the heavy-run lock: its descriptor is close-on-exec.
Take the lock around :func:`run_worker` in the parent.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from protocol.worker_lines import WORKER_LINE_TYPES, WorkerLine
from services.common.logging import get_logger
from services.common.paths import REPO_ROOT
from services.trainer.params import TrainParams
from services.trainer.worker_io import (
    EXIT_BAD_INPUT,
    EXIT_NO_MEMORY,
    EXIT_OK,
    EXIT_PARENT_GONE,
    EXIT_STOPPED,
)

log = get_logger("trainer.runner")

POLL_S = 0.2
STOP_GRACE_S = 20.0
STDERR_TAIL_LINES = 40

STATUS_BY_EXIT = {
    EXIT_OK: "ok",
    EXIT_BAD_INPUT: "bad_input",
    EXIT_NO_MEMORY: "insufficient_memory",
    EXIT_STOPPED: "stopped",
    EXIT_PARENT_GONE: "orphaned",
}


class WorkerResult(msgspec.Struct, kw_only=True):
    """How a worker run ended.

    ``status``: ok | stopped (SIGTERM, checkpoint saved: ``resume=True``
    continues) | insufficient_memory (refused before loading; ``error`` says
    how much was needed) | bad_input | failed | killed (by a signal).
    """

    status: str
    exit_code: int | None
    error: str = ""
    summary: dict[str, Any] = {}  # the worker's "done" line
    last_progress: dict[str, Any] = {}
    started: dict[str, Any] = {}  # the worker's "started" line (compute path, examples)
    checkpoint_step: int = 0
    pid: int = 0
    duration_s: float = 0.0
    stderr_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def worker_command(model_dir: Path, data_dir: Path, out_dir: Path, params: TrainParams, *,
                   resume: bool, anchor_cache: Path | None = None) -> list[str]:
    """The training worker's command line (the death-pipe flags are added by the runner)."""
    command = [sys.executable, "-m", "services.trainer.worker", "--model", str(model_dir),
               "--data", str(data_dir), "--out", str(out_dir), "--params", params.to_json()]
    if anchor_cache is not None:
        command += ["--anchor-cache", str(anchor_cache)]
    if resume:
        command.append("--resume")
    return command


def run_worker(model_dir: Path, data_dir: Path, out_dir: Path, params: TrainParams,
               on_progress: Callable[[dict[str, Any]], None] | None = None,
               should_stop: Callable[[], bool] | None = None, *, resume: bool = True,
               env: dict[str, str] | None = None, on_line: Callable[[dict[str, Any]], None] | None = None,
               on_log: Callable[[str], None] | None = None, stop_grace_s: float = STOP_GRACE_S,
               anchor_cache: Path | None = None) -> WorkerResult:
    """Train in a worker process; returns when it has ended (and been reaped).

    ``on_progress`` gets each ``progress`` line (step, steps, loss,
    tokens_per_s, eta_s); ``on_line`` every JSON line; ``on_log`` each stderr
    line. ``resume``: continue from a matching checkpoint in ``out_dir`` if
    there is one (a fresh start otherwise). ``env`` is added to this
    process's environment (e.g. ``OPENBLAS_NUM_THREADS``).
    """
    command = worker_command(Path(model_dir), Path(data_dir), Path(out_dir), params, resume=resume,
                             anchor_cache=anchor_cache)
    return _run_child(command, on_progress=on_progress, should_stop=should_stop, env=env, on_line=on_line,
                      on_log=on_log, stop_grace_s=stop_grace_s)


def run_paraphraser(model_dir: Path, requests_path: Path, out_path: Path,
                    on_progress: Callable[[dict[str, Any]], None] | None = None,
                    should_stop: Callable[[], bool] | None = None, *,
                    env: dict[str, str] | None = None) -> WorkerResult:
    """Reword a night's questions in ``services.trainer.paraphrase_worker``; same guarantees as
    :func:`run_worker` (dies with this process, stoppable, reaped). ``on_progress`` gets
    step (requests done), steps and eta_s."""
    command = [sys.executable, "-m", "services.trainer.paraphrase_worker", "--model", str(model_dir),
               "--requests", str(requests_path), "--out", str(out_path)]
    return _run_child(command, on_progress=on_progress, should_stop=should_stop, env=env, stop_grace_s=5.0)


def _run_child(command: list[str], *, on_progress: Callable[[dict[str, Any]], None] | None,
               should_stop: Callable[[], bool] | None, env: dict[str, str] | None,
               on_line: Callable[[dict[str, Any]], None] | None = None,
               on_log: Callable[[str], None] | None = None, stop_grace_s: float = STOP_GRACE_S) -> WorkerResult:
    """Spawn a worker tied to this process by the death pipe, pump its JSON lines, reap it."""
    read_fd, write_fd = os.pipe()  # both non-inheritable; pass_fds opens read_fd to the worker only
    started_at = time.monotonic()
    try:
        proc = subprocess.Popen(
            [*command, "--parent-fd", str(read_fd), "--parent-pid", str(os.getpid())],
            cwd=REPO_ROOT, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(read_fd,))
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    session = _Session(proc, on_progress, on_line, on_log)
    try:
        session.pump(should_stop, stop_grace_s)
    except BaseException:
        _kill(proc)
        raise
    finally:
        os.close(write_fd)  # the worker is reaped (or killed above): the pipe has done its job
        session.close()
    return session.result(time.monotonic() - started_at)


class _Session:
    """The worker's two output streams, read on threads, dispatched on the caller's thread."""

    def __init__(self, proc: subprocess.Popen[bytes], on_progress: Any, on_line: Any, on_log: Any) -> None:
        self.proc = proc
        self.on_progress = on_progress
        self.on_line = on_line
        self.on_log = on_log
        self.lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self.last: dict[str, dict[str, Any]] = {}
        self.threads = [threading.Thread(target=self._read, args=("out", proc.stdout), daemon=True),
                        threading.Thread(target=self._read, args=("err", proc.stderr), daemon=True)]
        for thread in self.threads:
            thread.start()

    def _read(self, stream: str, pipe: Any) -> None:
        try:
            for raw in pipe:
                self.lines.put((stream, raw.decode("utf-8", "replace").rstrip("\n")))
        finally:
            self.lines.put((stream, None))

    def pump(self, should_stop: Callable[[], bool] | None, stop_grace_s: float) -> None:
        open_streams = 2
        stop_sent_at: float | None = None
        while open_streams or self.proc.poll() is None:
            try:
                stream, text = self.lines.get(timeout=POLL_S)
            except queue.Empty:
                stream, text = "", ""
            if text is None:
                open_streams -= 1
            elif stream == "out":
                self._handle_json(text)
            elif stream == "err":
                self.stderr_tail.append(text)
                if self.on_log is not None:
                    self.on_log(text)
            if stop_sent_at is None and should_stop is not None and self.proc.poll() is None and should_stop():
                self.proc.send_signal(signal.SIGTERM)  # the worker checkpoints and exits 5
                stop_sent_at = time.monotonic()
            if stop_sent_at is not None and time.monotonic() - stop_sent_at > stop_grace_s:
                _kill(self.proc)
            if not open_streams:
                self.proc.wait()

    def _handle_json(self, text: str) -> None:
        line = parse_worker_line(text)
        if line is None:
            self.stderr_tail.append(text)  # not ours: keep it with the log
            return
        self.last[line["type"]] = line
        if self.on_line is not None:
            self.on_line(line)
        if line["type"] == "progress" and self.on_progress is not None:
            self.on_progress(line)

    def close(self) -> None:
        for thread in self.threads:
            thread.join(timeout=5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def result(self, duration_s: float) -> WorkerResult:
        code = self.proc.returncode
        if code is not None and code < 0:
            status = "killed"
        else:
            status = STATUS_BY_EXIT.get(code if code is not None else -1, "failed")
        error = str(self.last.get("error", {}).get("error", ""))
        if status == "stopped" and not error:
            step = self.last.get("stopped", {}).get("step", 0)
            error = (f"training was stopped at step {step} (checkpoint saved: run again with "
                     "resume=True to continue)" if step else "training was stopped before its first step")
        elif status == "killed" and not error:
            error = f"the training worker was killed by signal {-code} (out of memory?)"
        elif status == "failed" and not error:
            error = f"the training worker exited with {code}: {' | '.join(list(self.stderr_tail)[-3:])}"
        return WorkerResult(
            status=status, exit_code=code, error=error, summary=self.last.get("done", {}),
            last_progress=self.last.get("progress", {}), started=self.last.get("started", {}),
            checkpoint_step=max(int(self.last.get("checkpoint", {}).get("step", 0) or 0),
                                int(self.last.get("stopped", {}).get("step", 0) or 0)),
            pid=self.proc.pid, duration_s=round(duration_s, 2), stderr_tail="\n".join(self.stderr_tail))


_WORKER_LINE = msgspec.json.Decoder(WorkerLine)


def parse_worker_line(text: str) -> dict[str, Any] | None:
    """A worker's stdout line as a dict (its type under ``type``), or None if it is not one.

    Every line is checked against its contract in protocol.worker_lines; a line of a known
    type that breaks it is logged and still used (the run is not failed for a field the
    parent may not even read), a line of a type the contract does not name is passed on.
    """
    try:
        line = json.loads(text)
    except ValueError:
        return None
    if not isinstance(line, dict) or "type" not in line:
        return None
    if line["type"] in WORKER_LINE_TYPES:
        try:
            _WORKER_LINE.decode(text)
        except msgspec.ValidationError as exc:
            log.warning("trainer.worker_line_off_contract", type=str(line["type"]), error=str(exc))
    return line


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
