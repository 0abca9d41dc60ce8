"""Build the morning report: ``latest.html`` and its PNGs in one directory.

The page is self-contained (inline CSS, no script, no remote font or
library); the images are files beside it, named ``latest-*.png``, so the
directory can be copied or opened from anywhere. Every file is written
atomically, the page last: a reader never sees a page whose images are
missing.
"""

from __future__ import annotations

import datetime as dt
import html
import time
from dataclasses import dataclass
from pathlib import Path

from services.common.atomic import write_atomic
from services.common.paths import Paths
from services.report import plots
from services.report.nights import History, Night, load_history

PAGE = "latest.html"


@dataclass
class Built:
    page: Path
    images: list[Path]
    nights: int


def default_dir(paths: Paths) -> Path:
    return paths.data / "reports"


def build_report(paths: Paths, out_dir: Path | None = None, *, gates: dict[str, float] | None = None,
                 last: int = 14) -> Built:
    """Read the nights, draw the plots, write the page; returns what was written."""
    out = out_dir or default_dir(paths)
    out.mkdir(parents=True, exist_ok=True)
    history = load_history(paths, last=last)
    trained = [n for n in history.nights if n.losses]
    figures = {
        "recall": plots.recall(history.nights),
        "health": plots.health(history.nights, gates or {}),
        "memories": plots.memories(history.nights),
        "loss": plots.loss(trained[-1] if trained else None),
        "timings": plots.timings(history.nights),
    }
    images = []
    for name, png in figures.items():
        if png is not None:
            path = out / f"latest-{name}.png"
            write_atomic(path, png, mode=0o644)
            images.append(path)
    page = out / PAGE
    write_atomic(page, render_html(history, {k: f"latest-{k}.png" for k, v in figures.items() if v}).encode(),
                 mode=0o644)
    return Built(page=page, images=images, nights=len(history.nights))


# -- HTML ------------------------------------------------------------------------------------

CSS = """
body{font:15px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 margin:0;background:#f5f6f8;color:#212121}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 2px} h2{font-size:17px;margin:28px 0 10px}
.sub{color:#616161;margin:0 0 18px}
.card{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:18px;margin:0 0 16px}
.badge{display:inline-block;border-radius:999px;padding:2px 12px;font-weight:600;color:#fff;font-size:13px}
.promote{background:#2e7d32}.reject{background:#c62828}.failed{background:#757575}.running{background:#1565c0}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin-top:14px}
.tile{background:#f5f6f8;border-radius:8px;padding:10px 12px}
.tile b{display:block;font-size:20px} .tile span{color:#616161;font-size:12px}
.bad b{color:#c62828} .good b{color:#2e7d32}
table{border-collapse:collapse;width:100%;font-size:13px;background:#fff}
th,td{text-align:left;padding:6px 6px;border-bottom:1px solid #eee;white-space:nowrap}
th{color:#616161;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.plots .wide{grid-column:1/3} img{max-width:100%;height:auto;display:block}
.alert{border-left:4px solid #f9a825;padding:6px 10px;margin:6px 0;background:#fffde7}
.alert.error{border-color:#c62828;background:#ffebee}
.muted{color:#757575} ul{margin:8px 0 0 18px;padding:0}
.cap{margin:0 0 8px;color:#424242;font-size:13px}
"""

CAPTIONS = {
    "recall": "Recall of the night's facts, asked in wording never trained on, against the bare model.",
    "health": "What each night cost the model: lower is better; the dotted line is the gate as configured now.",
    "memories": "What the day gave the night: memories stored by route, and those forgotten.",
    "timings": "From the start of training to the verdict.",
    "loss": "The last training run's loss, step by step.",
}

VERDICT_WORDS = {"promote": "promoted", "reject": "rejected", "failed": "failed", "running": "running"}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%a %d %b %H:%M")


def _pct(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def render_html(history: History, images: dict[str, str]) -> str:
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f"<meta name=viewport content='width=device-width,initial-scale=1'>"
             f"<title>circadian: the morning report</title><style>{CSS}</style></head><body><main>",
             "<h1>Good morning. Here is how the nights went.</h1>",
             f"<p class=sub>Generated {_e(_when(time.time()))} from the event log (up to seq "
             f"{history.head_seq}). Serving now: <b>{_e(history.serving or 'the base model, no adapter')}</b>.</p>"]
    if not history.nights:
        parts.append("<div class=card><p>No night yet. Chat during the day, then run <code>circ sleep</code> "
                     "(or wait for the sleep window); this page is written after every night.</p></div>")
    else:
        parts.append(_last_night(history.nights[-1], history.serving))
    parts.append(_alerts(history.alerts))
    if images:
        parts.append("<h2>Over the nights</h2><div class=plots>")
        for name in ("recall", "health", "memories", "timings", "loss"):
            if name in images:
                wide = " wide"  # one plot per row: the nights run along x, and they add up
                parts.append(f"<div class='card{wide}'><p class=cap>{_e(CAPTIONS[name])}</p>"
                             f"<img src='{_e(images[name])}' alt='{_e(CAPTIONS[name])}'></div>")
        parts.append("</div>")
    if history.nights:
        parts.append(_table(history.nights))
    parts.append("<p class=muted>circadian: <code>circ report --open</code> rebuilds this page; "
                 "<code>circ log export</code> has every figure.</p></main></body></html>")
    return "\n".join(parts)


def _tile(value: str, caption: str, tone: str = "") -> str:
    return f"<div class='tile {tone}'><b>{_e(value)}</b><span>{_e(caption)}</span></div>"


def _last_night(n: Night, serving: str | None) -> str:
    m = n.metrics
    out = [f"<div class=card><h2 style='margin-top:0'>Last night, {_e(_when(n.started_ts))} "
           f"<span class='badge {_e(n.verdict)}'>{_e(VERDICT_WORDS.get(n.verdict, n.verdict))}</span></h2>"]
    what = f"adapter <b>{_e(n.adapter_id)}</b>" if n.adapter_id else "no adapter"
    if n.verdict == "promote":
        out.append(f"<p>{what} learnt the night and is {'being served' if serving == n.adapter_id else 'promoted'}.</p>")
    elif n.verdict == "reject":
        out.append(f"<p>{what} was trained and judged, and kept out: the one served before stays.</p>")
    elif n.verdict == "failed":
        out.append(f"<p>The night stopped at the <b>{_e(n.failed_stage)}</b> stage; nothing changed.</p>")
    if n.reasons and n.verdict != "promote":
        out.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in n.reasons) + "</ul>")
    tiles = []
    if "fact_recall" in m:
        better = m["fact_recall"] > m.get("fact_recall_base", 0.0)
        tiles.append(_tile(_pct(m["fact_recall"]), f"held-out fact recall (bare model {_pct(m.get('fact_recall_base'))})",
                           "good" if better else "bad"))
    if "canary_drop_pts" in m:
        tiles.append(_tile(f"{-m['canary_drop_pts']:+.1f} pts", "canary change", "bad" if m["canary_drop_pts"] > 0 else "good"))
    if "ppl_drift_pct" in m:
        tiles.append(_tile(f"{m['ppl_drift_pct']:+.1f}%", "perplexity drift", "bad" if m["ppl_drift_pct"] > 0 else "good"))
    if "false_recall" in m:
        tiles.append(_tile(_pct(m["false_recall"]), f"false recall (bare {_pct(m.get('false_recall_base'))})"))
    tiles.append(_tile(str(n.steps), "training steps"))
    tiles.append(_tile(_dur(n.total_s), f"training to verdict (training {_dur(n.train_s)}, evaluation {_dur(n.eval_s)})"))
    peak = n.extra.get("peak_memory_bytes")  # from data/reports/nights.jsonl, when the trainer wrote it
    if isinstance(peak, int) and peak > 0:
        tiles.append(_tile(f"{peak / 2**30:.2f} GiB", "training peak memory (MLX)"))
    stored = sum(n.stored_by_route.values())
    routes = ", ".join(f"{v} {k}" for k, v in sorted(n.stored_by_route.items())) or "none"
    tiles.append(_tile(str(stored), f"memories stored: {routes}"))
    forgotten = sum(n.forgotten_by_route.values())
    tiles.append(_tile(str(forgotten), "memories forgotten" + (
        ": " + ", ".join(f"{v} {k}" for k, v in sorted(n.forgotten_by_route.items())) if forgotten else "")))
    out.append("<div class=tiles>" + "".join(tiles) + "</div>")
    kinds = n.canary_by_kind()
    if len(kinds) > 1 or (kinds and "all" not in kinds):
        out.append("<h2>Canary change by kind</h2><table><tr><th>kind</th><th>change (points)</th></tr>" + "".join(
            f"<tr><td>{_e(k)}</td><td class=num>{v:+.1f}</td></tr>" for k, v in kinds.items()) + "</table>")
    out.append("</div>")
    return "".join(out)


def _alerts(alerts: list[dict]) -> str:
    if not alerts:
        return ""
    rows = []
    for a in reversed(alerts[-8:]):
        tone = "alert error" if a.get("severity") == "error" else "alert"
        rows.append(f"<div class='{tone}'><b>{_e(str(a.get('cause', '')).replace('_', ' '))}</b> "
                    f"<span class=muted>{_e(_when(a['ts']))}</span> {_e(a.get('message', ''))}</div>")
    return "<h2>Alerts</h2><div class=card>" + "".join(rows) + "</div>"


def _table(nights: list[Night]) -> str:
    head = ("<h2>Every night</h2><div class=card style='overflow-x:auto'><table><tr><th>night</th><th>verdict</th>"
            "<th>adapter</th><th>recall</th><th>bare</th><th>canary</th><th>ppl drift</th><th>false recall</th>"
            "<th>steps</th><th>loss</th><th>train</th><th>eval</th><th>total</th><th>stored</th><th>forgotten</th></tr>")
    rows = []
    for n in reversed(nights):
        m = n.metrics
        canary = m.get("canary_drop_pts")
        rows.append(
            f"<tr><td>{_e(_when(n.started_ts))}</td><td><span class='badge {_e(n.verdict)}'>"
            f"{_e(VERDICT_WORDS.get(n.verdict, n.verdict))}</span></td><td>{_e(n.adapter_id or '–')}</td>"
            f"<td class=num>{_pct(m.get('fact_recall'))}</td><td class=num>{_pct(m.get('fact_recall_base'))}</td>"
            f"<td class=num>{'–' if canary is None else f'{-canary:+.1f}'}</td>"
            f"<td class=num>{_num(m.get('ppl_drift_pct'), '+.1f')}{'' if 'ppl_drift_pct' not in m else '%'}</td>"
            f"<td class=num>{_pct(m.get('false_recall'))}</td><td class=num>{n.steps or '–'}</td>"
            f"<td class=num>{_num(n.final_loss, '.3f')}</td><td class=num>{_dur(n.train_s)}</td>"
            f"<td class=num>{_dur(n.eval_s)}</td><td class=num>{_dur(n.total_s)}</td>"
            f"<td class=num>{sum(n.stored_by_route.values())}</td><td class=num>{sum(n.forgotten_by_route.values())}</td></tr>")
    return head + "".join(rows) + "</table></div>"
