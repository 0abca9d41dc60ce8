"""`circ bench memory --quick` from the command line, as a user runs it.

One real run (a scratch home, every daemon, a chatted synthetic day, a
sleep through the trainer and evaluator, conditions trained with the
trainer's code, measured with the evaluator's): the JSON object it prints
has every condition with the documented keys, rates are fractions, and the
report files are written next to each other. What the figures *are* is the
benchmark's business (README), not asserted here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from services.common.paths import REPO_ROOT

pytestmark = pytest.mark.e2e

CIRC = REPO_ROOT / "bin" / "circ"
RATES = ("recall_adapter_heldout", "recall_adapter_trained", "recall_rag", "retrieval_recall_at_5", "retention",
         "false_recall")
REQUIRED = (*RATES, "canary_delta_pts", "ppl_drift_pct")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    out = tmp_path_factory.mktemp("bench-memory")
    result = subprocess.run([str(CIRC), "bench", "memory", "--quick", "--json", "--out", str(out)],
                            capture_output=True, text=True, timeout=1500, cwd=REPO_ROOT)
    assert result.returncode == 0, f"bench failed ({result.returncode}):\n{result.stderr[-4000:]}"
    return json.loads(result.stdout), out, result.stderr


def test_quick_json_has_every_condition_with_its_figures(quick_run: tuple[dict, Path, str]) -> None:
    data, _, _ = quick_run
    conditions = data["conditions"]
    assert {"default", "no_training", "rag_only", "qa_1", "qa_5", "rag_adapter"} <= set(conditions)
    for name, figures in conditions.items():
        for key in REQUIRED:
            assert key in figures, f"{name} lacks {key}"
        uses_rag = name in ("rag_only", "rag_adapter", "default")
        for key in RATES:
            value = figures[key]
            # Retention has nothing to measure on the first night; RAG figures
            # exist only where recall is part of the condition.
            absent = key == "retention" or (key in ("recall_rag", "retrieval_recall_at_5") and not uses_rag)
            assert value is None if absent else 0.0 <= value <= 1.0, (name, key, value)
    # The untrained model is the reference the drift figures are measured against.
    assert conditions["no_training"]["canary_delta_pts"] == 0.0
    assert conditions["no_training"]["ppl_drift_pct"] == 0.0
    # The default condition went through the real sleep: a verdict and an adapter.
    assert conditions["default"]["verdict"] in ("promote", "reject")
    assert conditions["default"]["adapter_id"]
    # Retrieval is measured only where recall is part of the condition.
    assert conditions["qa_5"]["retrieval_recall_at_5"] is None
    assert conditions["rag_only"]["retrieval_recall_at_5"] is not None


def test_quick_writes_json_markdown_and_plots(quick_run: tuple[dict, Path, str]) -> None:
    data, out, stderr = quick_run
    on_disk = json.loads((out / "memory.json").read_text())
    assert on_disk["conditions"].keys() == data["conditions"].keys()
    table = (out / "memory.md").read_text()
    for name in data["conditions"]:
        assert f"| {name} |" in table
    for png in ("retention.png", "drift.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    # Progress went to stderr while it ran; stdout held only the JSON object.
    assert "night 1: sleeping" in stderr and "measuring default" in stderr


def test_bad_arguments_are_refused_with_a_clear_message() -> None:
    result = subprocess.run([str(CIRC), "bench", "memory", "--conditions", "qa_5,bogus"],
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 2
    assert "unknown condition(s) bogus" in result.stderr
