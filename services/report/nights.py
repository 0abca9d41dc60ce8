"""The nights, read back from the log: one :class:`Night` per sleep, oldest first.

Source of truth is the event log (read-only SQLite, so the report works
whether or not the daemons run): ``training.*``, ``evaluation.completed``,
``adapter.promoted/rejected``, and the ``memory.*`` events between nights.
When ``data/reports/nights.jsonl`` exists (one line per night, written by the
trainer), its fields for a sleep (matched by ``sleep_id``) are added as
``extra`` (peak memory, stage timings): the log stays the record of what
happened, the trend file adds what the log does not hold.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from protocol.report_lines import NIGHT_LINE_DECODER
from services.common.paths import Paths

NIGHT_TYPES = ("training.started", "training.progress", "training.finished", "training.failed",
               "evaluation.completed", "adapter.promoted", "adapter.rejected")
OTHER_TYPES = ("memory.stored", "memory.forgotten", "adapter.reloaded", "adapter.rolled_back", "alert.raised")


@dataclass
class Night:
    sleep_id: str
    started_ts: float
    adapter_id: str = ""
    trigger: str = ""
    verdict: str = "running"  # promote | reject | failed | running
    reasons: list[str] = field(default_factory=list)
    failed_stage: str = ""
    ended_ts: float | None = None
    steps: int = 0
    final_loss: float | None = None
    train_s: float | None = None
    eval_s: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    gates: dict[str, bool] = field(default_factory=dict)
    losses: list[tuple[int, float]] = field(default_factory=list)
    stored_by_route: dict[str, int] = field(default_factory=dict)
    forgotten_by_route: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_s(self) -> float | None:
        return None if self.ended_ts is None else max(0.0, self.ended_ts - self.started_ts)

    def canary_by_kind(self) -> dict[str, float]:
        """Canary change in points by kind (negative: worse), where the evaluator reports kinds."""
        kinds = {k[len("canary_drop_pts_"):]: -float(v) for k, v in self.metrics.items()
                 if k.startswith("canary_drop_pts_")}
        by_kind = self.extra.get("canary_by_kind")
        if isinstance(by_kind, dict):
            kinds.update({str(k): float(v) for k, v in by_kind.items() if isinstance(v, (int, float))})
        if "canary_drop_pts" in self.metrics:
            kinds = {"all": -float(self.metrics["canary_drop_pts"]), **kinds}
        return kinds


@dataclass
class History:
    nights: list[Night]
    serving: str | None  # the adapter chat serves (or would serve at start)
    alerts: list[dict[str, Any]]
    head_seq: int


def _rows(conn: sqlite3.Connection, types: tuple[str, ...]) -> list[tuple[int, float, str, dict]]:
    marks = ",".join("?" * len(types))
    out = []
    for seq, ts, type_, body in conn.execute(
            f"SELECT seq, ts, type, body FROM events WHERE type IN ({marks}) ORDER BY seq", types):
        try:
            decoded = msgspec.msgpack.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            continue  # an undecodable row is an audit matter (`circ log verify`), not a report's
        if isinstance(decoded, dict):
            out.append((seq, ts, type_, decoded))
    return out


def load_history(paths: Paths, last: int = 14) -> History:
    """The last ``last`` nights with their figures; empty when there is no log yet."""
    if not paths.events_db.exists():
        return History(nights=[], serving=_current(paths), alerts=[], head_seq=0)
    conn = sqlite3.connect(f"file:{paths.events_db}?mode=ro", uri=True, timeout=5)
    try:
        rows = _rows(conn, NIGHT_TYPES + OTHER_TYPES)
        head = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    finally:
        conn.close()
    nights: dict[str, Night] = {}
    by_adapter: dict[str, Night] = {}
    route_of: dict[str, str] = {}
    pending_stored: dict[str, int] = {}
    pending_forgotten: dict[str, int] = {}
    alerts: list[dict[str, Any]] = []
    serving = None
    for seq, ts, type_, body in rows:
        sid = str(body.get("sleep_id", ""))
        night = nights.get(sid) if sid else by_adapter.get(str(body.get("adapter_id", "")))
        if type_ == "memory.stored":
            route = str(body.get("route", "?"))
            for mid in body.get("memory_ids", []) or []:
                route_of[str(mid)] = route
            pending_stored[route] = pending_stored.get(route, 0) + 1
        elif type_ == "memory.forgotten":
            for mid in body.get("memory_ids", []) or []:
                route = route_of.get(str(mid), "unknown")
                pending_forgotten[route] = pending_forgotten.get(route, 0) + 1
        elif type_ == "adapter.reloaded":
            serving = body.get("adapter_id")
        elif type_ == "alert.raised":
            alerts.append({"seq": seq, "ts": ts, **{k: body.get(k) for k in ("cause", "message", "key", "severity")}})
        elif type_ in ("training.started", "training.failed") and sid and sid not in nights:
            # A night's memories are those stored since the night before began.
            night = nights[sid] = Night(sleep_id=sid, started_ts=ts, stored_by_route=pending_stored,
                                        forgotten_by_route=pending_forgotten)
            pending_stored, pending_forgotten = {}, {}
        if night is None:
            continue
        _apply(night, type_, ts, body)
        if night.adapter_id:
            by_adapter[night.adapter_id] = night
    ordered = sorted(nights.values(), key=lambda n: n.started_ts)[-last:]
    _add_trend_file(paths, ordered)
    current = _current(paths)
    return History(nights=ordered, serving=current if current is not None else serving, alerts=alerts[-20:],
                   head_seq=int(head))


def _apply(night: Night, type_: str, ts: float, body: dict) -> None:
    match type_:
        case "training.started":
            night.adapter_id = str(body.get("adapter_id", ""))
            night.trigger = str(body.get("trigger", ""))
            night.counts = {str(k): int(v) for k, v in (body.get("counts") or {}).items()}
            night.steps = int(body.get("steps", 0) or 0)
        case "training.progress":
            night.losses.append((int(body.get("step", 0)), float(body.get("loss", 0.0))))
        case "training.finished":
            night.steps = int(body.get("steps", night.steps) or 0)
            night.final_loss = float(body.get("final_loss", 0.0))
            night.train_s = float(body.get("duration_s", 0.0))
        case "training.failed":
            night.verdict, night.failed_stage, night.ended_ts = "failed", str(body.get("stage", "")), ts
            night.reasons = [str(body.get("error", ""))]
        case "evaluation.completed":
            night.metrics = {str(k): float(v) for k, v in (body.get("metrics") or {}).items()
                             if isinstance(v, (int, float))}
            night.gates = {str(k): bool(v) for k, v in (body.get("gates") or {}).items()}
            night.eval_s = float(body.get("duration_s", 0.0))
            night.reasons = [str(r) for r in body.get("reasons", []) or []]
            by_kind = body.get("canary_by_kind")  # evaluators before canary kinds: absent
            if isinstance(by_kind, dict) and by_kind:
                night.extra["canary_by_kind"] = by_kind
        case "adapter.promoted":
            night.verdict, night.ended_ts = "promote", ts
        case "adapter.rejected":
            night.verdict, night.ended_ts = "reject", ts
            night.reasons = [str(r) for r in body.get("reasons", []) or []] or night.reasons


def _add_trend_file(paths: Paths, nights: list[Night]) -> None:
    trend = paths.data / "reports" / "nights.jsonl"
    if not trend.is_file():
        return
    by_id = {n.sleep_id: n for n in nights}
    try:
        lines = trend.read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        if not line.strip():
            continue
        try:  # typed (protocol.report_lines): a line of the wrong shape is skipped, never trusted
            record = msgspec.to_builtins(NIGHT_LINE_DECODER.decode(line))
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            continue  # a torn last line from a crash: the log still has that night
        if record["sleep_id"] in by_id:
            by_id[record["sleep_id"]].extra.update(record)


def _current(paths: Paths) -> str | None:
    link = paths.adapters / "current"
    try:
        return Path(link.readlink()).name if link.is_symlink() else None
    except OSError:
        return None
