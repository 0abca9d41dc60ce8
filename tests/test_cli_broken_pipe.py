"""`circ ... | head -1`: a reader that goes away ends the command quietly, never with a traceback.

The commands run as real subprocesses (bin/circ, bin/circ-chat) with stdout
on a pipe whose read end is already closed, so every write fails with EPIPE
deterministically: with Python's default block buffering (the error surfaces
at the final flush) and unbuffered (it surfaces inside the command). No
daemons are needed: each command prints without them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from services.common.paths import REPO_ROOT

CIRC = str(REPO_ROOT / "bin" / "circ")
CIRC_CHAT = str(REPO_ROOT / "bin" / "circ-chat")
COMMANDS = {
    "doctor --json": [CIRC, "doctor", "--json", "--no-probe"],
    "doctor": [CIRC, "doctor", "--no-probe"],
    "status --json": [CIRC, "status", "--json"],
    "--help": [CIRC, "--help"],
    "log --help": [CIRC, "log", "--help"],
    "circ-chat --help": [CIRC_CHAT, "--help"],
}
NOISE = ("Traceback", "BrokenPipeError", "Exception ignored", "Broken pipe")


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    home = tempfile.mkdtemp(prefix="cbp-", dir="/tmp")
    base = {k: v for k, v in os.environ.items() if not k.startswith("CIRCADIAN_")}
    try:
        yield {**base, "CIRCADIAN_HOME": home}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _run_into_closed_pipe(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte is written
    try:
        return subprocess.run(command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)


def _stdout_of(command: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=120)
    return result.stdout


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("name", list(COMMANDS))
def test_closed_stdout_pipe_exits_quietly(name: str, buffered: bool, env: dict[str, str]) -> None:
    command = COMMANDS[name]
    env = dict(env)
    env.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    assert _stdout_of(command, env).strip(), f"{name} prints nothing: the test would prove nothing"
    result = _run_into_closed_pipe(command, env)
    assert not any(word in result.stderr for word in NOISE), result.stderr
    assert result.returncode == 0, result.stderr  # the reader took what it wanted: not an error


def test_doctor_json_piped_into_head(env: dict[str, str]) -> None:
    """The command from the report, through a real shell pipeline."""
    script = f"set -o pipefail; {CIRC} doctor --json --no-probe | head -1"
    result = subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout == "{\n"
    assert not any(word in result.stderr for word in NOISE), result.stderr
    assert result.returncode == 0, result.stderr
