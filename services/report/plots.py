"""The report's figures: matplotlib (Agg, no display), one PNG each, as bytes.

Each function takes the nights oldest first and returns PNG bytes or None
when there is nothing to draw (no evaluated night yet, no training loss).
"""

from __future__ import annotations

import datetime as dt
import io

from services.report.nights import Night

COLORS = {"promote": "#2e7d32", "reject": "#c62828", "failed": "#757575", "running": "#1565c0"}
ROUTE_COLORS = {"lora": "#5e35b1", "both": "#00897b", "rag": "#f9a825", "unknown": "#9e9e9e"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display, no GUI toolkit: works in a daemon
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 110})
    return plt


def label(night: Night) -> str:
    return dt.datetime.fromtimestamp(night.started_ts).strftime("%m-%d %H:%M")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def recall(nights: list[Night]) -> bytes | None:
    judged = [n for n in nights if "fact_recall" in n.metrics]
    if not judged:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.6, 3.0))
    x = range(len(judged))
    ax.plot(x, [n.metrics.get("fact_recall_base", 0.0) * 100 for n in judged], color="#9e9e9e", lw=1.5,
            ls="--", marker="s", ms=6, label="bare model")
    ax.plot(x, [n.metrics["fact_recall"] * 100 for n in judged], color="#1565c0", lw=2, label="with the adapter")
    for i, n in zip(x, judged, strict=True):
        ax.scatter([i], [n.metrics["fact_recall"] * 100], s=70, zorder=3, color=COLORS.get(n.verdict, "#000"),
                   edgecolors="white", linewidths=1.2)
        ax.annotate(f"{n.metrics['fact_recall'] * 100:.0f}%", (i, n.metrics["fact_recall"] * 100),
                    xytext=(7, 4), textcoords="offset points", fontsize=8)
    _pad(ax, len(judged))
    ax.set_ylim(-5, 105)
    ax.set_ylabel("held-out fact recall (%)")
    ax.set_xticks(list(x), [label(n) for n in judged], rotation=30, ha="right")
    ax.set_title("Does it remember? Held-out wording; dot colour: the verdict "
                 "(green promoted, red rejected)", loc="left")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def health(nights: list[Night], gates: dict[str, float]) -> bytes | None:
    judged = [n for n in nights if n.metrics]
    if not judged:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 2.8))
    x = list(range(len(judged)))
    panels = [("canary_drop_pts", "canary drop (points)", 1.0, gates.get("max_canary_drop_pts")),
              ("ppl_drift_pct", "perplexity drift (%)", 1.0, gates.get("max_ppl_drift_pct")),
              ("false_recall", "false recall (%)", 100.0, _pct(gates.get("max_false_recall")))]
    for ax, (key, title, scale, gate) in zip(axes, panels, strict=True):
        values = [n.metrics.get(key, float("nan")) * scale for n in judged]
        ax.bar(x, values, width=0.6, color=[COLORS.get(n.verdict, "#000") for n in judged], alpha=0.85)
        for i, v in zip(x, values, strict=True):
            if v == v:  # not NaN
                ax.annotate(f"{v:+.1f}", (i, v), xytext=(0, 3 if v >= 0 else -10), textcoords="offset points",
                            ha="center", fontsize=8)
        _pad(ax, len(judged))
        ax.margins(y=0.18)  # room for the value labels above the bars
        if gate is not None:
            ax.axhline(gate, color="#c62828", ls=":", lw=1.2)
            ax.annotate(f"gate {gate:g}", (1, gate), xycoords=("axes fraction", "data"), xytext=(-2, 2),
                        textcoords="offset points", color="#c62828", fontsize=7, ha="right")
        ax.axhline(0, color="#424242", lw=0.8)
        ax.set_title(title, loc="left")
        ax.set_xticks(x, [label(n) for n in judged], rotation=30, ha="right")
    fig.tight_layout()
    return _png(fig)


def _pad(ax, n: int) -> None:
    """Room around few nights, so one night is a bar, not a wall."""
    if n < 6:
        ax.set_xlim(-0.5 - (6 - n) / 4, n - 0.5 + (6 - n) / 4)


def _pct(value: float | None) -> float | None:
    return None if value is None else value * 100.0


def memories(nights: list[Night]) -> bytes | None:
    if not any(n.stored_by_route or n.forgotten_by_route for n in nights):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.6, 2.8))
    x = list(range(len(nights)))
    routes = sorted({r for n in nights for r in (*n.stored_by_route, *n.forgotten_by_route)})
    bottom = [0.0] * len(nights)
    below = [0.0] * len(nights)
    for route in routes:
        stored = [n.stored_by_route.get(route, 0) for n in nights]
        gone = [-n.forgotten_by_route.get(route, 0) for n in nights]
        color = ROUTE_COLORS.get(route, "#607d8b")
        ax.bar(x, stored, width=0.6, bottom=bottom, color=color, label=f"{route}")
        if any(gone):
            ax.bar(x, gone, width=0.6, bottom=below, color=color, alpha=0.4, hatch="//")
        bottom = [b + s for b, s in zip(bottom, stored, strict=True)]
        below = [b + g for b, g in zip(below, gone, strict=True)]
    ax.axhline(0, color="#424242", lw=0.8)
    ax.set_xticks(x, [label(n) for n in nights], rotation=30, ha="right")
    _pad(ax, len(nights))
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("memories")
    ax.set_title("Memories stored before each night, by route (hatched, below 0: forgotten)", loc="left")
    ax.legend(frameon=False, title="route", loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return _png(fig)


def loss(night: Night | None) -> bytes | None:
    if night is None or len(night.losses) < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.6, 2.6))
    steps, values = zip(*night.losses, strict=True)
    ax.plot(steps, values, color="#5e35b1", lw=2, marker="o", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"Last training run ({label(night)})", loc="left")
    return _png(fig)


def timings(nights: list[Night]) -> bytes | None:
    timed = [n for n in nights if n.total_s is not None]
    if not timed:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.6, 2.6))
    x = list(range(len(timed)))
    train = [(n.train_s or 0.0) / 60 for n in timed]
    evaluate = [(n.eval_s or 0.0) / 60 for n in timed]
    rest = [max(0.0, (n.total_s or 0.0) / 60 - t - e) for n, t, e in zip(timed, train, evaluate, strict=True)]
    ax.bar(x, rest, width=0.6, color="#90a4ae", label="the rest")
    ax.bar(x, train, width=0.6, bottom=rest, color="#5e35b1", label="training")
    ax.bar(x, evaluate, width=0.6, bottom=[r + t for r, t in zip(rest, train, strict=True)], color="#00897b", label="evaluation")
    _pad(ax, len(timed))
    ax.set_xticks(x, [label(n) for n in timed], rotation=30, ha="right")
    ax.set_ylabel("minutes")
    ax.set_title("How long each night took", loc="left")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)
