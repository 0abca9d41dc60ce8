"""The night's teacher (issue 14, part 4), tested against a second circadian's own API.

Instance A learns; instance B is its teacher (`trainer.teacher_url` = B's
OpenAI-compatible API on a port chosen up front). Both are real daemons
under supervisord, on the embedded model.

1. B is not running yet: A's night logs ``training.teacher_failed`` and falls
   back to its own model's rewordings (the night goes on).
2. B is up: A's next night has B write the rewordings. B's own log shows the
   requests it served (every API turn is logged there), and they carry the
   night's question/answer pairs redacted: the e-mail address A was told
   never reached B.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import TURN_TYPE, Instance, base_env, make_home, remove_home, wait_until

pytestmark = pytest.mark.e2e

STEPS = 2
SECRET = "priya.k.nair@example.org"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in base_env(home).items()
           if not k.startswith(("CIRCADIAN_TRAINER_", "CIRCADIAN_EVALUATOR_"))}
    env["CIRCADIAN_TRAINER_WINDOW"] = ""  # no scheduled night behind the test's back
    env["CIRCADIAN_TRAINER_MODEL_PARAPHRASES"] = "2"  # the fallback when the teacher is down
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def learner(port: int) -> Iterator[Instance]:
    home = make_home()
    inst = Instance(home, _env(home, CIRCADIAN_TRAINER_TEACHER_URL=f"http://127.0.0.1:{port}/v1",
                               CIRCADIAN_TRAINER_TEACHER_TIMEOUT_S="120",
                               CIRCADIAN_TRAINER_MODEL_PARAPHRASES="1"))
    try:
        inst.up()
        for name in ("ingest", "trainer", "evaluator"):
            inst.wait_ready(name, timeout_s=60)
        yield inst
    finally:
        inst.teardown()
        remove_home(home)


@pytest.fixture(scope="module")
def teacher_home(port: int) -> Iterator[Instance]:
    home = make_home()
    inst = Instance(home, _env(home, CIRCADIAN_API_PORT=str(port)))
    try:
        yield inst
    finally:
        inst.teardown()
        remove_home(home)


def _tell(inst: Instance, *statements: str) -> None:
    for text in statements:
        result = inst.chat("--message", text, "--max-tokens", "4", timeout_s=180)
        assert result.returncode == 0, result.stderr
    last = max(e["seq"] for e in inst.events(TURN_TYPE))
    wait_until(lambda: any(e["body"].get("turn_seq") == last for e in inst.events()
                           if e["type"] in ("memory.stored", "memory.skipped", "memory.failed")),
               120, "ingest to decide the last turn", interval_s=0.3)


def _night(inst: Instance) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    start = max((e["seq"] for e in inst.events()), default=0)
    result = inst.circ("sleep", "--wait", "--json", "--steps", str(STEPS), "--timeout", "900", timeout_s=960)
    summary = json.loads(result.stdout)
    assert summary["verdict"] in ("promote", "reject"), f"{result.stdout}\n{result.stderr}\n{inst.logs()}"
    return summary, [e for e in inst.events() if e["seq"] > start]


def _paraphrased_by(inst: Instance, adapter_id: str) -> str:
    manifest = json.loads((inst.paths.adapters / adapter_id / "manifest.json").read_text())
    return manifest["dataset"]["paraphrased_by"]


def test_an_unreachable_teacher_falls_back_with_an_event(learner: Instance, port: int) -> None:
    _tell(learner, "My dog is called Biscuit and she is a beagle.", "I work as a nurse at St. Olaf hospital.")
    summary, events = _night(learner)
    [failed] = [e["body"] for e in events if e["type"] == "training.teacher_failed"]
    assert failed["teacher"] == f"127.0.0.1:{port}" and "cannot be reached" in failed["error"], failed
    assert failed["fallback"] == "built-in" and failed["requests"] > 0 and failed["answered"] == 0
    assert _paraphrased_by(learner, summary["adapter_id"]) == "model smollm2-135m-instruct"


def test_a_second_circadian_teaches_the_night_and_sees_only_redacted_text(
        learner: Instance, teacher_home: Instance, port: int) -> None:
    teacher_home.up()
    teacher_home.wait_ready("api", timeout_s=60)
    _tell(learner, f"My sister Anjali lives in Pune and her e-mail is {SECRET}.",
          "My favourite tea is a smoky lapsang souchong.")
    summary, events = _night(learner)
    assert not [e for e in events if e["type"] == "training.teacher_failed"], events
    assert _paraphrased_by(learner, summary["adapter_id"]) == f"teacher 127.0.0.1:{port}"
    asked = [e["body"]["user_text"] for e in teacher_home.events(TURN_TYPE)]
    assert any(text.startswith("Rewrite this question") for text in asked), asked[:3]
    assert any("Anjali" in text or "tea" in text for text in asked), asked[:6]
    assert all(SECRET not in text for text in asked)
    # Nowhere in the teacher's home either (its memory, its logs), only the learner's raw log holds it.
    for path in teacher_home.home.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert SECRET.encode() not in path.read_bytes(), path


def test_the_teacher_url_is_validated_at_load(tmp_path: Path) -> None:
    inst = Instance(tmp_path, _env(tmp_path, CIRCADIAN_TRAINER_TEACHER_URL="ftp://user:pw@example.org/"))
    result = inst.circ("up", timeout_s=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "teacher_url" in result.stderr and "http://" in result.stderr
    shutil.rmtree(tmp_path, ignore_errors=True)
