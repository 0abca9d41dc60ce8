"""The morning report and the alerts, from real nights through the real daemons.

One instance whose evaluator gates cannot be met (no canary drop, no
perplexity drift, every fact recalled) and whose training is harsh (lr 1e-3):
every night is rejected. Two short nights (4 steps each, no model
paraphrases) on the same four facts, with a ``kill -9`` of the trainer
between them:

- the first rejected night raises one ``alert.raised`` (adapter_rejected),
  runs the ``[alerts] command`` hook with the alert in its environment, and
  shows as an ``alert:`` line in `circ status`;
- the second rejected night, within the hour and after the trainer was
  killed and restarted, raises none (the rate limit is on disk) and the state
  file counts it as suppressed;
- after each night the trainer wrote ``data/reports/latest.html``; `circ
  report --out DIR` writes the page and its PNGs; every image the page shows
  exists and is a PNG, and the page names the nights' adapters and verdicts;
  where Chromium exists it loads the page headless and screenshots it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from .harness import Instance, base_env, make_home, parse_json_lines, running, wait_until

pytestmark = pytest.mark.e2e

FACTS = ("My cat is called Miso.", "My sister lives in Porto.", "My favourite fruit is mango.",
         "My brother works at Siemens.")
STEPS = "4"
SLEEP_TIMEOUT_S = 900
REPORT_TIMEOUT_S = 180.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def inst() -> Iterator[Instance]:
    home = make_home()
    env = {k: v for k, v in base_env(home).items()
           if not k.startswith(("CIRCADIAN_TRAINER_", "CIRCADIAN_EVALUATOR_", "CIRCADIAN_ALERTS_"))}
    env.update({
        "CIRCADIAN_TRAINER_WINDOW": "",  # no scheduled sleep behind the test's back
        "CIRCADIAN_TRAINER_MODEL_PARAPHRASES": "0",  # a cheap night
        "CIRCADIAN_TRAINER_LEARNING_RATE": "1e-3",  # harsh: it moves perplexity
        # Gates no night can pass: the night is rejected on its real figures.
        "CIRCADIAN_EVALUATOR_MAX_CANARY_DROP_PTS": "0",
        "CIRCADIAN_EVALUATOR_MAX_PPL_DRIFT_PCT": "0",
        "CIRCADIAN_EVALUATOR_MIN_FACT_RECALL": "1.0",
        "CIRCADIAN_ALERTS_DESKTOP": "false",
        "CIRCADIAN_ALERTS_MIN_FREE_MB": "0",  # a nearly full /tmp must not add its own alert here
        "CIRCADIAN_ALERTS_COMMAND": f"sh -c 'echo \"$CIRCADIAN_ALERT_CAUSE $CIRCADIAN_ALERT_KEY\" >> {home}/hook.log'",
    })
    with running(home, env, ready_timeout_s=90) as instance:
        yield instance


def _teach(inst: Instance) -> None:
    for text in FACTS:
        result = inst.chat("--json", "--no-recall", "--temperature", "0", "--max-tokens", "4", "--message", text)
        assert result.returncode == 0, result.stderr
        [record] = parse_json_lines(result.stdout)
        wait_until(lambda seq=record["seq"]: [e for e in inst.events("memory.stored") if e["body"]["turn_seq"] == seq],
                   60, f"ingest to remember {text!r}")


def _sleep(inst: Instance) -> dict:
    result = inst.circ("sleep", "--wait", "--json", "--steps", STEPS, "--timeout", str(SLEEP_TIMEOUT_S - 60),
                       timeout_s=SLEEP_TIMEOUT_S)
    summary = json.loads(result.stdout)
    assert summary["verdict"] == "reject", (summary, result.stderr, inst.logs())
    return summary


def _alerts(inst: Instance) -> list[dict]:
    return inst.events("alert.raised")


def _wait_report(inst: Instance, adapter_id: str) -> str:
    page = inst.paths.data / "reports" / "latest.html"
    return wait_until(lambda: page.is_file() and adapter_id in page.read_text() and page.read_text(),
                      REPORT_TIMEOUT_S, f"the trainer to write {page} naming {adapter_id}", interval_s=0.5)


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.remote: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        values = dict(attrs)
        if tag == "img":
            self.sources.append(values.get("src") or "")
        for key in ("src", "href"):
            if str(values.get(key) or "").startswith(("http:", "https:", "//")):
                self.remote.append(values[key])


def _check_page(page: Path) -> list[Path]:
    """Every image the page shows exists beside it and is a PNG; nothing is fetched from elsewhere."""
    parser = _Images()
    parser.feed(page.read_text())
    assert parser.sources, f"{page} shows no plot"
    assert not parser.remote, f"{page} is not self-contained: {parser.remote}"
    images = [page.parent / src for src in parser.sources]
    for image in images:
        assert image.is_file(), f"{page} shows {image.name}, which is missing"
        assert image.read_bytes()[:8] == PNG_MAGIC and image.stat().st_size > 2000, f"{image} is not a plot"
    return images


@pytest.fixture(scope="module")
def first_night(inst: Instance) -> dict:
    _teach(inst)
    summary = _sleep(inst)
    _wait_report(inst, summary["adapter_id"])
    return summary


def test_a_rejected_night_raises_one_alert_runs_the_hook_and_shows_in_status(inst: Instance, first_night: dict) -> None:
    adapter_id = first_night["adapter_id"]
    [alert] = _alerts(inst)
    body = alert["body"]
    assert alert["source"] == "trainer" and body["cause"] == "adapter_rejected" and body["key"] == adapter_id
    assert adapter_id in body["message"] and "rejected" in body["message"]
    [rejected] = inst.events("adapter.rejected")
    assert rejected["seq"] < alert["seq"]
    assert (inst.home / "hook.log").read_text().split("\n")[0] == f"adapter_rejected {adapter_id}"
    status = inst.circ("status")
    assert status.returncode == 0, status.stderr
    [line] = [x for x in status.stdout.splitlines() if x.startswith("alert:")]
    assert "adapter_rejected" in line and adapter_id in line
    assert json.loads(inst.circ("status", "--json").stdout)["alerts"][0]["cause"] == "adapter_rejected"


def test_the_trainer_writes_the_report_and_circ_report_renders_it(inst: Instance, first_night: dict,
                                                                  tmp_path: Path) -> None:
    adapter_id = first_night["adapter_id"]
    latest = inst.paths.data / "reports" / "latest.html"
    _check_page(latest)
    out = tmp_path / "report"
    result = inst.circ("report", "--out", str(out), timeout_s=180)
    assert result.returncode == 0, result.stderr
    page = Path(result.stdout.strip())
    assert page == out / "latest.html"
    images = _check_page(page)
    assert {"latest-recall.png", "latest-health.png", "latest-memories.png", "latest-timings.png"} <= \
        {i.name for i in images}
    text = page.read_text()
    [evaluation] = inst.events("evaluation.completed")
    recall = evaluation["body"]["metrics"]["fact_recall"]
    assert adapter_id in text and "rejected" in text and f"{recall * 100:.0f}%" in text
    assert "adapter_rejected".replace("_", " ") in text  # the alert is on the page too
    _screenshot(page, inst.home / "report-shot.png")


def test_the_night_has_its_line_in_the_trend_file_and_its_canary_by_kind(inst: Instance, first_night: dict) -> None:
    """data/reports/nights.jsonl: one line for the night, with the evaluator's per-kind canary change,
    also in evaluation.completed and the manifest; the page shows the change by kind."""
    from protocol.report_lines import NIGHT_LINE_DECODER
    from services.evaluator.canaries import KINDS

    trend = inst.paths.data / "reports" / "nights.jsonl"
    [line] = [NIGHT_LINE_DECODER.decode(x) for x in trend.read_text().splitlines()]
    [evaluation] = inst.events("evaluation.completed")
    by_kind = evaluation["body"]["canary_by_kind"]
    assert set(by_kind) == set(KINDS) and all(-100.0 <= v <= 100.0 for v in by_kind.values())
    assert line.sleep_id == first_night["sleep_id"] and line.adapter_id == first_night["adapter_id"]
    assert line.verdict == "reject" and line.canary_by_kind == by_kind
    assert line.metrics == evaluation["body"]["metrics"] and line.reasons == evaluation["body"]["reasons"]
    assert line.train_s and line.eval_s and line.total_s >= line.train_s + line.eval_s - 1
    assert line.peak_memory_bytes and line.peak_memory_bytes > 10_000_000
    manifest = json.loads((inst.paths.adapters / first_night["adapter_id"] / "manifest.json").read_text())
    assert manifest["evaluation"]["canary_by_kind"] == by_kind
    text = (inst.paths.data / "reports" / "latest.html").read_text()
    assert "Canary change by kind" in text and all(f"<td>{kind}</td>" in text for kind in KINDS)
    assert f"{line.peak_memory_bytes / 2**30:.2f} GiB" in text and "training peak memory" in text


def _screenshot(page: Path, shot: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        print("SKIP (screenshot): no chromium on PATH (Debian: apt-get install chromium); "
              "the page was parsed and every image checked instead")
        return
    result = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             f"--screenshot={shot}", "--window-size=1240,2600", page.resolve().as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    assert shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 50_000, "the screenshot is blank"
    print(f"screenshot: {shot}")


def test_a_second_rejected_night_within_the_hour_raises_no_alert_even_after_a_restart(
        inst: Instance, first_night: dict) -> None:
    old = inst.pid("trainer")
    os.kill(old, signal.SIGKILL)
    inst.wait_running("trainer", not_pid=old, timeout_s=90)
    inst.wait_ready("trainer", timeout_s=90)
    summary = _sleep(inst)
    assert summary["adapter_id"] != first_night["adapter_id"]
    _wait_report(inst, summary["adapter_id"])
    assert len(inst.events("adapter.rejected")) == 2
    alerts = _alerts(inst)
    assert [a["body"]["cause"] for a in alerts] == ["adapter_rejected"], alerts
    state = json.loads((inst.paths.state / "alerts.json").read_text())
    assert state["adapter_rejected"]["suppressed"] == 1, state
    assert (inst.home / "hook.log").read_text().count("adapter_rejected") == 1
    # Both nights are on the page, newest first in the table.
    text = (inst.paths.data / "reports" / "latest.html").read_text()
    assert text.index(summary["adapter_id"]) < text.rindex(first_night["adapter_id"])
