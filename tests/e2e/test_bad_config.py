"""Bad settings and broken models stop `circ up` at once, with one line saying what to fix.

Nothing is started in these cases: a daemon that cannot work would only be
restarted by supervisord until it went FATAL, and the user would have to
dig the reason out of a log file.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from services.common.paths import models_dir

from .harness import Instance, base_env

pytestmark = pytest.mark.e2e

FAST_S = 30.0  # `circ up` imports the CLI and reads file headers: no model load, no daemons
EMBEDDED_MODEL = models_dir() / "smollm2-135m-instruct"


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    return lines[0]


def _assert_nothing_started(inst: Instance) -> None:
    assert not inst.supervisor.is_running()
    assert not (inst.paths.run / "supervisord.pid").exists()
    assert not (inst.paths.logs / "chat.log").exists()


def _up_fails(inst: Instance) -> str:
    started = time.monotonic()
    result = inst.circ("up", "--timeout", "60", timeout_s=120)
    elapsed = time.monotonic() - started
    assert result.returncode != 0, f"circ up succeeded:\n{result.stderr}"
    assert elapsed < FAST_S, f"circ up took {elapsed:.1f} s to fail"
    _assert_nothing_started(inst)
    return _one_line(result.stderr)


@pytest.fixture
def bad_toml(fresh_home: Instance) -> Path:
    path = fresh_home.home / "bad.toml"
    path.write_text('[chat]\ntemperature = "hot"\n')
    fresh_home.env = base_env(fresh_home.home, CIRCADIAN_CONFIG=str(path))
    return path


def test_up_names_the_file_and_key_of_a_bad_config_value(fresh_home: Instance, bad_toml: Path) -> None:
    line = _up_fails(fresh_home)
    assert str(bad_toml) in line
    assert "chat.temperature" in line
    assert "Traceback" not in line


def test_doctor_names_the_file_and_key_of_a_bad_config_value(fresh_home: Instance, bad_toml: Path) -> None:
    result = fresh_home.circ("doctor", "--no-probe", timeout_s=120)
    assert result.returncode != 0
    line = _one_line(result.stderr)
    assert str(bad_toml) in line and "chat.temperature" in line


def test_up_names_a_bad_environment_value(fresh_home: Instance) -> None:
    fresh_home.env = base_env(fresh_home.home, CIRCADIAN_CHAT_TEMPERATURE="hot")
    line = _up_fails(fresh_home)
    assert "chat.temperature" in line and "CIRCADIAN_" in line


def test_up_with_a_missing_model_says_to_install_it(fresh_home: Instance) -> None:
    fresh_home.env = base_env(fresh_home.home, CIRCADIAN_CHAT_MODEL="/nonexistent")
    line = _up_fails(fresh_home)
    assert "/nonexistent" in line
    assert "circ model install" in line


def test_up_with_a_truncated_model_names_the_file(fresh_home: Instance) -> None:
    if not (EMBEDDED_MODEL / "model.safetensors").is_file():
        pytest.skip("the embedded model is not installed (bin/circ model install)")
    broken = fresh_home.home / "broken-model"
    shutil.copytree(EMBEDDED_MODEL, broken)
    weights = broken / "model.safetensors"
    with open(weights, "r+b") as handle:  # a copy cut short: the header survives, the tail does not
        handle.truncate(weights.stat().st_size // 3)
    fresh_home.env = base_env(fresh_home.home, CIRCADIAN_CHAT_MODEL=str(broken))
    line = _up_fails(fresh_home)
    assert str(weights) in line
    assert "truncated" in line
    assert "circ model install" in line
