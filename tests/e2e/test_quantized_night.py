"""The path a Mac takes, on the CPU backend: 4-bit weights served, QLoRA on them (issue 16).

One instance with ``chat.compute = quantized`` and ``trainer.compute =
quantized`` (environment overrides, as a user would set them): chat answers
from the stored 4-bit weights, a 3-step night trains LoRA over the quantized
layers, the evaluator scores it unfused on the 4-bit base, the gates are
opened wide (the path is under test here, not what 3 steps learn) so it is
promoted, and chat reloads and serves it. MLX's CPU quantized kernels are
slow; a few steps and few tokens keep this to a minute or two.
"""

from __future__ import annotations

import json
import shutil

import pytest

from services.cli.chat_client import ChatClient

from .harness import Instance, base_env, make_home, wait_until

pytestmark = pytest.mark.e2e

FACTS = ("My cat is called Miso.", "My sister lives in Porto.")
GATES_OPEN = {
    "CIRCADIAN_EVALUATOR_MIN_FACT_RECALL": "0", "CIRCADIAN_EVALUATOR_MAX_CANARY_DROP_PTS": "100",
    "CIRCADIAN_EVALUATOR_MAX_PPL_DRIFT_PCT": "1000", "CIRCADIAN_EVALUATOR_MAX_FALSE_RECALL": "1",
    "CIRCADIAN_EVALUATOR_MAX_FALSE_RECALL_RISE": "1", "CIRCADIAN_EVALUATOR_MAX_FORMAT_DROP": "1",
}


def _turn(inst: Instance, text: str):
    client = ChatClient(inst.paths, max_wait_s=300)
    try:
        return client.complete(text, max_tokens=4, recall=False)
    finally:
        client.close()


def test_quantized_day_and_night_on_cpu():
    home = make_home()
    # No model-written rewordings: the paraphrase worker is not on the quantized path (it loads
    # the model as serving's "auto" does) and is tested elsewhere (tests/e2e/test_night.py,
    # test_teacher.py); here it would only add a model load and a generation pass.
    env = base_env(home, CIRCADIAN_CHAT_COMPUTE="quantized", CIRCADIAN_TRAINER_COMPUTE="quantized",
                   CIRCADIAN_TRAINER_MODEL_PARAPHRASES="0", **GATES_OPEN)
    inst = Instance(home, env)
    try:
        inst.up()
        pong_text = inst.circ("doctor", timeout_s=120).stdout
        assert "4bit" in pong_text, f"circ doctor does not show the 4-bit weights served:\n{pong_text}"
        for text in FACTS:
            final = _turn(inst, text)
            assert final.turn.adapter_id in (None, ""), final.turn
        wait_until(lambda: len([e for e in inst.events("memory.stored")
                                if e["body"].get("route") in ("lora", "both")]) >= len(FACTS),
                   60, "ingest to route the facts to training", interval_s=0.5)
        result = inst.circ("sleep", "--wait", "--steps", "3", timeout_s=900)
        promoted = inst.events("adapter.promoted")
        assert promoted, f"no adapter.promoted (circ sleep rc {result.returncode}):\n{result.stdout}\n" \
                         f"{result.stderr}\n{inst.logs()}"
        adapter_id = promoted[-1]["body"]["adapter_id"]
        figures = json.loads((inst.paths.adapters / adapter_id / "training.json").read_text())
        assert figures["compute"]["weights"] == "4bit", figures["compute"]
        evaluated = inst.events("evaluation.completed")
        assert evaluated and evaluated[-1]["body"].get("adapter_id") == adapter_id
        wait_until(lambda: _turn(inst, "Hello").turn.adapter_id == adapter_id, 120,
                   f"chat to serve {adapter_id}", interval_s=2.0)
    finally:
        inst.teardown()
        shutil.rmtree(home, ignore_errors=True)
