"""The nights' trend file (data/reports/nights.jsonl) and the trainer's belief in a verdict.

The writer (services.trainer.nights_log) on a real adapter store, the line
decoded with the protocol's typed decoder, a torn last line, the report
reading the line back (services.report.nights); and services.trainer.verdict
.checked, which refuses a ``promote`` that does not prove itself.
"""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest

from protocol.events import EvaluationCompleted
from protocol.report_lines import NIGHT_LINE_DECODER, NightLine
from protocol.trainer_api import Evaluate
from services.common.paths import Paths
from services.lib.adapters.store import AdapterStore
from services.report.nights import Night, _add_trend_file
from services.trainer.nights_log import append_night, night_line, nights_path, record_night
from services.trainer.sleep import SleepState
from services.trainer.verdict import VerdictMissing, checked

BY_KIND = {"code": 0.0, "instructions": -33.33, "knowledge": -2.5, "long_context": 0.0, "refusal": 0.0}


def _judged_adapter(paths: Paths, adapter_id: str) -> None:
    """A committed adapter with a training summary and the evaluator's verdict in its manifest."""
    store = AdapterStore(paths.adapters)
    staging = store.stage(adapter_id)
    (staging / "adapters.safetensors").write_bytes(b"not read here")
    (staging / "adapter_config.json").write_text("{}")
    (staging / "training.json").write_text('{"steps": 6, "final_loss": 1.25, "duration_s": 41.5, '
                                           '"peak_memory_bytes": 734003200}')
    store.commit(adapter_id, {"final_loss": 1.25})
    evaluation = EvaluationCompleted(adapter_id=adapter_id, baseline_id=None, verdict="reject",
                                     metrics={"canary_drop_pts": 4.1, "ppl_drift_pct": 2.0},
                                     gates={"canary": False, "perplexity": True},
                                     reasons=["canary dropped 4.1 points"], duration_s=88.2,
                                     canary_by_kind=BY_KIND)
    store.update_manifest(adapter_id, "evaluation", msgspec.to_builtins(evaluation))


def test_a_judged_night_gets_one_line_with_figures_timings_memory_and_kinds(tmp_path: Path) -> None:
    paths = Paths(tmp_path).ensure()
    _judged_adapter(paths, "ad-1")
    state = SleepState(sleep_id="sl-1", adapter_id="ad-1", trigger="manual", started_at=1000.0)
    path = append_night(paths, night_line(paths, state, "reject", now=1200.0))
    assert path == nights_path(paths) == paths.data / "reports" / "nights.jsonl"
    [text] = path.read_text().splitlines()
    line = NIGHT_LINE_DECODER.decode(text)
    assert line == NightLine(sleep_id="sl-1", adapter_id="ad-1", trigger="manual", verdict="reject",
                             started_at=1000.0, ended_at=1200.0, total_s=200.0, train_s=41.5, eval_s=88.2,
                             steps=6, final_loss=1.25, peak_memory_bytes=734003200,
                             metrics={"canary_drop_pts": 4.1, "ppl_drift_pct": 2.0},
                             gates={"canary": False, "perplexity": True},
                             reasons=["canary dropped 4.1 points"], canary_by_kind=BY_KIND)


def test_a_failed_night_gets_its_line_with_what_is_known(tmp_path: Path) -> None:
    paths = Paths(tmp_path).ensure()
    state = SleepState(sleep_id="sl-2", adapter_id="ad-never", trigger="schedule", error="no memories to learn")
    line = NIGHT_LINE_DECODER.decode(record_night(paths, state, "failed").read_text())
    assert line.verdict == "failed" and line.error == "no memories to learn"
    assert line.metrics == {} and line.peak_memory_bytes is None and line.train_s is None


def test_a_torn_last_line_is_skipped_and_the_next_starts_on_its_own(tmp_path: Path) -> None:
    paths = Paths(tmp_path).ensure()
    path = nights_path(paths)
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"sleep_id": "sl-torn", "verd')  # a crash mid-write
    record_night(paths, SleepState(sleep_id="sl-3", adapter_id="", trigger="idle"), "failed")
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and NIGHT_LINE_DECODER.decode(lines[1]).sleep_id == "sl-3"
    with pytest.raises(msgspec.DecodeError):
        NIGHT_LINE_DECODER.decode(lines[0])


def test_the_report_adds_the_line_to_its_night_and_skips_bad_lines(tmp_path: Path) -> None:
    paths = Paths(tmp_path).ensure()
    _judged_adapter(paths, "ad-4")
    record_night(paths, SleepState(sleep_id="sl-4", adapter_id="ad-4", trigger="manual"), "reject")
    with nights_path(paths).open("a") as f:
        f.write('{"sleep_id": "sl-4", "verdict": 3}\n[1, 2]\n\n')  # wrong shapes: skipped
    night = Night(sleep_id="sl-4", started_ts=0.0, metrics={"canary_drop_pts": 4.1})
    _add_trend_file(paths, [night])
    assert night.extra["peak_memory_bytes"] == 734003200 and night.extra["verdict"] == "reject"
    assert night.canary_by_kind() == {"all": -4.1, **BY_KIND}


# ---------------------------------------------------------------- the trainer's check of a verdict

REQUEST = Evaluate(adapter_id="ad-5", candidate_dir="/nowhere", request_id="e5")


def _verdict(**kw) -> EvaluationCompleted:
    base = dict(adapter_id="ad-5", baseline_id=None, verdict="promote", gates={"canary": True, "perplexity": True},
                metrics={"ppl": 10.0})
    return EvaluationCompleted(**{**base, **kw})


def test_a_proven_promote_and_any_reject_are_believed() -> None:
    assert checked(_verdict(), REQUEST).verdict == "promote"
    assert checked(_verdict(verdict="reject", gates={}), REQUEST).verdict == "reject"


@pytest.mark.parametrize(("kw", "says"), [
    ({"gates": {}}, "no gates"),
    ({"gates": {"canary": True, "perplexity": False}}, "failed gates (perplexity)"),
    ({"metrics": {"ppl": math.nan}}, "not numbers (ppl)"),
    ({"metrics": {"ppl": math.inf}}, "not numbers (ppl)"),
    ({"adapter_id": "ad-other"}, "judged ad-other, not ad-5"),
])
def test_a_promote_without_proof_is_refused(kw: dict, says: str) -> None:
    with pytest.raises(VerdictMissing, match=says.replace("(", r"\(").replace(")", r"\)")):
        checked(_verdict(**kw), REQUEST)
