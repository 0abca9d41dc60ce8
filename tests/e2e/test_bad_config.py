"""Bad settings and broken models stop `circ up` at once, with one line saying what to fix.

Nothing is started in these cases: a daemon that cannot work would only be
restarted by supervisord until it went FATAL, and the user would have to
dig the reason out of a log file.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from services.common.paths import models_dir

from .harness import Instance, base_env, wait_until

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


@pytest.mark.parametrize(("variable", "value", "key"), [
    ("CIRCADIAN_TRAINER_RANK", "0", "trainer.rank"),
    ("CIRCADIAN_TRAINER_WINDOW", "23:00-25:00", "trainer.window"),
    ("CIRCADIAN_EVALUATOR_MAX_FALSE_RECALL", "1.5", "evaluator.max_false_recall"),
])
def test_up_refuses_a_value_that_would_fail_only_at_night(fresh_home: Instance, variable: str, value: str,
                                                          key: str) -> None:
    """A key the trainer or evaluator reads at 02:00 is checked by `circ up`, before anything starts."""
    fresh_home.env = base_env(fresh_home.home, **{variable: value})
    line = _up_fails(fresh_home)
    assert line.startswith(f"circ: the environment variable {variable}: {key} = {value!r}"), line
    assert "default" in line


def test_a_daemon_restarted_into_a_bad_config_stops_once_instead_of_looping(fresh_home: Instance) -> None:
    """The config is edited while running, then the trainer dies: it exits 2 with one line, and stays down.

    supervisord restarts a daemon after a crash, but not after exit 2 (a bad config): restarting
    would fail the same way until FATAL. `circ status` shows it EXITED; nothing else is disturbed.
    """
    config = fresh_home.home / "circadian.toml"
    config.write_text("[trainer]\nrank = 8\n")
    fresh_home.env = base_env(fresh_home.home, CIRCADIAN_CONFIG=str(config))
    fresh_home.up()
    old_pid = fresh_home.pid("trainer")
    config.write_text("[trainer]\nrank = 0\n")
    os.kill(old_pid, signal.SIGKILL)

    def exited() -> bool:
        state = fresh_home.procs().get("trainer")
        return state is not None and state.state == "EXITED"

    wait_until(exited, 60, "the trainer to exit on its bad config")
    time.sleep(5)  # past supervisord's backoff: a restart loop would show STARTING/BACKOFF/FATAL now
    assert fresh_home.procs()["trainer"].state == "EXITED"
    log = (fresh_home.paths.logs / "trainer.log").read_text()
    assert f"trainer: {config}: trainer.rank = 0: Expected `int` >= 1" in log
    assert fresh_home.procs()["chat"].state == "RUNNING"
    status = fresh_home.circ("status", timeout_s=120)
    assert "trainer" in status.stdout and "EXITED" in status.stdout, status.stdout
