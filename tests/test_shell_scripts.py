"""The launchers in bin/ (and CI's script) parse, and pass shellcheck where it is installed.

`bin/setup --dev` installs shellcheck with apt where apt exists; elsewhere the
lint is skipped with the reason printed, and `bash -n` still runs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from services.common.paths import REPO_ROOT

SCRIPTS = sorted(p for p in [*(REPO_ROOT / "bin").iterdir(), REPO_ROOT / ".ci" / "run"]
                 if p.is_file() and p.read_text(errors="replace").startswith("#!/usr/bin/env bash"))


def test_every_launcher_is_a_bash_script() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"setup", "start", "test", "circ", "circ-chat", "run"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_script_parses(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_script_passes_shellcheck(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (bin/setup --dev installs it where apt-get exists)")
    result = subprocess.run(["shellcheck", "--severity=info", str(script)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
