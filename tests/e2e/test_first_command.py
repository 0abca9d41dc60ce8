"""The README's first command, run the way a newcomer runs it.

A copy of the checkout (the files git knows, as a fresh clone has them) with
its own CIRCADIAN_HOME runs ``bin/start --message TEXT`` with no terminal and
``bin/start`` on a terminal. Both execute ``bin/setup`` without ``--dev``
and ``bin/start`` themselves; only the slow parts that a first run already
did are reused: the copy's ``.venv`` is a directory of its own whose ``bin``
and ``lib`` link to this checkout's virtualenv (its packages are the dev
superset of the runtime set) and whose install stamp says so, and
``models/`` links to the converted model. `bin/setup` once ended silently
without ``--dev`` (a ``[ … ] && …`` inside ``$( )`` under ``set -e``): this is
the test that would have caught it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.paths import REPO_ROOT

from .harness import base_env, make_home
from .terminal import Terminal

pytestmark = pytest.mark.e2e

START_TIMEOUT_S = 600.0  # setup's checks, `circ up` (five daemons load), one short reply
QUESTION = "What is the capital of France?"


def _copy_checkout(dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files: what a clone of this tree would hold."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO_ROOT / name
        if not source.is_file():
            continue  # deleted in the working tree but not yet in the index
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _reuse_virtualenv(copy: Path) -> None:
    venv = Path(sys.prefix)
    own = copy / ".venv"
    own.mkdir()
    shutil.copy2(venv / "pyvenv.cfg", own / "pyvenv.cfg")
    for part in ("bin", "lib", "lib64", "include"):
        if (venv / part).exists():
            (own / part).symlink_to(venv / part)
    # The stamp bin/setup writes after installing the runtime set for this pyproject.toml.
    digest = hashlib.sha256((copy / "pyproject.toml").read_bytes()).hexdigest()
    (own / ".circadian-installed").write_text(f"{digest}  pyproject.toml\n")


@pytest.fixture(scope="module")
def checkout() -> Iterator[Path]:
    if not (REPO_ROOT / "models" / "smollm2-135m-instruct" / "model.safetensors").is_file():
        pytest.fail("the embedded model is not installed: run bin/setup first")
    root = Path(tempfile.mkdtemp(prefix="cfc-", dir="/tmp"))
    copy = root / "circadian"
    try:
        _copy_checkout(copy)
        _reuse_virtualenv(copy)
        (copy / "models").symlink_to(REPO_ROOT / "models")
        yield copy
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def home(checkout: Path) -> Iterator[Path]:
    """One instance for the module: the scripted start brings it up, the prompt test reuses it."""
    home = make_home()
    env = _env(home)
    try:
        yield home
    finally:
        subprocess.run([str(checkout / "bin" / "circ"), "down"], env=env, cwd=checkout,
                       capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


def _env(home: Path) -> dict[str, str]:
    env = base_env(home)
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "CIRCADIAN_SETUP_PYTHON"):
        env.pop(name, None)  # as in a newcomer's shell: nothing points at this checkout
    return env


def _stamp_matches(checkout: Path) -> bool:
    stamp = (checkout / ".venv" / ".circadian-installed").read_text().split()[0]
    return stamp == hashlib.sha256((checkout / "pyproject.toml").read_bytes()).hexdigest()


def test_setup_without_flags_succeeds_and_says_ready(checkout: Path, home: Path) -> None:
    """`bin/setup` alone (no --dev) runs every step to the end and exits 0."""
    result = subprocess.run([str(checkout / "bin" / "setup")], cwd=checkout, env=_env(home),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert result.returncode == 0, f"bin/setup failed:\n{result.stderr}"
    assert "setup: ready" in result.stderr.replace("\x1b[1m", "").replace("\x1b[0m", "")
    assert _stamp_matches(checkout)


def test_start_with_a_message_answers_without_a_terminal(checkout: Path, home: Path) -> None:
    """`bin/start --message TEXT`, scripted: sets up, starts the daemons, prints the answer, exits 0."""
    result = subprocess.run([str(checkout / "bin" / "start"), "--message", QUESTION], cwd=checkout,
                            env=_env(home), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=START_TIMEOUT_S)
    assert result.returncode == 0, f"bin/start failed ({result.returncode}):\n{result.stderr}"
    assert "Paris" in result.stdout, f"unexpected answer: {result.stdout!r}"
    status = subprocess.run([str(checkout / "bin" / "circ"), "status"], cwd=checkout, env=_env(home),
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "chat" in status.stdout, status.stdout + status.stderr


def test_start_alone_ends_at_the_prompt(checkout: Path, home: Path) -> None:
    """`bin/start` on a terminal ends at the `you>` prompt (daemons already up: it says so), /quit leaves."""
    term = Terminal([str(checkout / "bin" / "start")], _env(home), cwd=checkout)
    try:
        term.expect(r"you> ", timeout_s=START_TIMEOUT_S)
        term.type("/quit")
        assert term.wait() == 0
    finally:
        term.close()


def test_setup_names_the_failing_step(tmp_path: Path) -> None:
    """A step that fails prints its line, its step and what to do: never a silent exit."""
    repo = tmp_path / "repo"
    (repo / "bin").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "bin" / "setup", repo / "bin" / "setup")
    shutil.copy2(REPO_ROOT / "pyproject.toml", repo / "pyproject.toml")
    # A Python that exists but cannot make a virtualenv: the venv step fails.
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\ncase \"$*\" in *'import sys'*) exit 0;; esac\necho 'no venv here' >&2\nexit 7\n")
    fake.chmod(0o755)
    env = {**os.environ, "CIRCADIAN_SETUP_PYTHON": str(fake), "PATH": os.environ["PATH"]}
    result = subprocess.run([str(repo / "bin" / "setup")], cwd=repo, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "setup: failed at line" in result.stderr
    assert "step: creating the virtualenv" in result.stderr
    assert "run bin/setup again" in result.stderr


def test_setup_refuses_an_unknown_option() -> None:
    result = subprocess.run([str(REPO_ROOT / "bin" / "setup"), "--bogus"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "unknown option --bogus" in result.stderr


def test_setup_refuses_a_python_older_than_3_11(tmp_path: Path) -> None:
    """mlx-lm 0.32 needs 3.11: an older interpreter is refused at once with what to do."""
    old = tmp_path / "python3.10"  # answers the version check as a 3.10 interpreter does
    old.write_text("#!/bin/sh\nexit 1\n")
    old.chmod(0o755)
    result = subprocess.run([str(REPO_ROOT / "bin" / "setup")], env={**os.environ, "CIRCADIAN_SETUP_PYTHON": str(old)},
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "is not a Python >= 3.11" in result.stderr
