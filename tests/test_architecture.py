"""The house rules hold: services meet only through messages (issue 11).

`lint-imports` checks the contract in pyproject.toml ([tool.importlinter]):
cli > services > lib > common > protocol, each layer importing only the ones
below it, and no daemon, and no domain library, importing a sibling. The
second test plants a violation in a copy of the tree and sees it refused, so
the first one cannot pass by checking nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from services.common.paths import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
SERVICES = ("api", "chat", "evaluator", "eventlog", "ingest", "report", "trainer")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})


def test_the_import_contract_is_kept() -> None:
    result = _lint(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_every_service_is_named_in_the_contract() -> None:
    """A new daemon package must join the contract's independent layer, or it would be unchecked."""
    contract = (REPO_ROOT / "pyproject.toml").read_text()
    on_disk = {p.name for p in (REPO_ROOT / "services").iterdir()
               if (p / "__main__.py").is_file() and p.name != "cli"}
    assert on_disk == set(SERVICES)
    for name in SERVICES:
        assert f"services.{name}" in contract
    libraries = {p.name for p in (REPO_ROOT / "services" / "lib").iterdir() if (p / "__init__.py").is_file()}
    for name in libraries:
        assert f"services.lib.{name}" in contract


def test_a_service_importing_another_is_refused(tmp_path: Path) -> None:
    for name in ("protocol", "services"):
        shutil.copytree(REPO_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "seed"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "services" / "chat" / "shortcut.py").write_text("from services.trainer import sleep  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "services.chat.shortcut -> services.trainer.sleep" in result.stdout
