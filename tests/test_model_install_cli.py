"""`circ model install <local dir>` through the real CLI, and the fix a broken model's error names.

Only what `circ model install` made (the embedded model, hub downloads, both
under the models directory) can be rebuilt with `--force`; a user's own
directory gets a message that says so instead of a command that would not
repair it. The CLI runs as a subprocess (bin/circ) on a copy of the embedded
model; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from services.common.paths import REPO_ROOT
from services.lib.models.install import install_model
from services.lib.models.validate import EMBEDDED_DIR, ModelError, validate_model_dir

CIRC = REPO_ROOT / "bin" / "circ"
EMBEDDED_FIX = "reinstall it with `circ model install --force`"
USER_FIX = "this is your own model directory"


@pytest.fixture(scope="module")
def embedded() -> Path:
    """The embedded model in the repo's models/ (converted once, reused)."""
    return install_model(None, REPO_ROOT / "models")


def _circ(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CIRC), *args], cwd=REPO_ROOT, env=env or dict(os.environ), text=True,
                          capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def _truncate_weights(model: Path) -> Path:
    weights = model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 3)  # a copy cut short: the header survives
    return weights


def _error(model: Path) -> str:
    with pytest.raises(ModelError) as excinfo:
        validate_model_dir(model)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_install_local_dir_validates_and_uses_it_in_place(embedded: Path, tmp_path: Path) -> None:
    """`circ model install DIR`: exit 0, prints DIR itself, copies nothing into the models directory."""
    mine = shutil.copytree(embedded, tmp_path / "my-model")
    models = tmp_path / "models"
    env = {**os.environ, "CIRCADIAN_MODELS": str(models)}
    result = _circ("model", "install", str(mine), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(mine.resolve())
    assert "Traceback" not in result.stderr
    assert not models.exists() or not any(models.iterdir())
    validate_model_dir(mine)


def test_install_of_a_broken_local_dir_names_the_file_and_a_fix_that_works(
        embedded: Path, tmp_path: Path) -> None:
    """A user's own broken directory: exit 1, one line naming the file; no --force that cannot help."""
    mine = shutil.copytree(embedded, tmp_path / "my-model")
    weights = _truncate_weights(mine)
    result = _circ("model", "install", str(mine))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("circ model install: ")
    assert str(weights) in lines[0] and "is truncated" in lines[0]
    assert USER_FIX in lines[0]
    assert "reinstall it with" not in lines[0]


def test_broken_embedded_model_says_reinstall_with_force(
        embedded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded model's directory under the models dir: `circ model install --force` rebuilds it."""
    models = tmp_path / "models"
    monkeypatch.setenv("CIRCADIAN_MODELS", str(models))
    copy = shutil.copytree(embedded, models / EMBEDDED_DIR)
    _truncate_weights(copy)
    message = _error(copy)
    assert message.endswith(EMBEDDED_FIX), message
    assert USER_FIX not in message
    (copy / "config.json").unlink()
    assert _error(copy).endswith(f"config.json is missing: {EMBEDDED_FIX}")
    # The same directory outside the models dir is the user's own.
    moved = shutil.move(str(copy), str(tmp_path / EMBEDDED_DIR))
    assert USER_FIX in _error(Path(moved))


def test_broken_hub_download_names_its_hub_id(
        embedded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    monkeypatch.setenv("CIRCADIAN_MODELS", str(models))
    copy = shutil.copytree(embedded, models / "mlx-community--SmolLM2-135M-Instruct-4bit")
    (copy / "tokenizer_config.json").unlink()
    message = _error(copy)
    assert message.endswith(
        "reinstall it with `circ model install mlx-community/SmolLM2-135M-Instruct-4bit --force`"), message


def test_doctor_shows_the_fix_for_the_configured_model(embedded: Path, tmp_path: Path) -> None:
    """`circ doctor --json` with [chat] model set to a broken user dir: the user fix, not --force."""
    mine = shutil.copytree(embedded, tmp_path / "my-model")
    _truncate_weights(mine)
    env = {**os.environ, "CIRCADIAN_HOME": str(tmp_path / "home"), "CIRCADIAN_CHAT_MODEL": str(mine)}
    result = _circ("doctor", "--json", "--no-probe", env=env)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert USER_FIX in report["model"]["state"]
    assert [p for p in report["problems"] if p.startswith("model: ")] == [f"model: {report['model']['state']}"]
    assert not any("--force" in p and "reinstall" in p for p in report["problems"])
