"""The memory benchmark's report: JSON, a markdown table, PNG plots, side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (key, header, how to show it): rates as percentages, deltas with a sign.
COLUMNS = (
    ("recall_adapter_heldout", "adapter, held-out wording", "pct"),
    ("recall_adapter_trained", "adapter, trained wording", "pct"),
    ("recall_rag", "with RAG", "pct"),
    ("retrieval_recall_at_5", "retrieval @5", "pct"),
    ("retention", "earlier nights", "pct"),
    ("recall_updated", "updated facts", "pct"),
    ("false_recall", "false recall", "pct"),
    ("canary_delta_pts", "canary Δ pts", "signed"),
    ("ppl_drift_pct", "ppl drift %", "signed"),
    ("format_delta", "format Δ", "signed"),
    ("steps", "steps", "int"),
    ("train_s", "train s", "int"),
)


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "pct":
        return f"{value * 100:.0f}%"
    if kind == "signed":
        return f"{value:+.1f}"
    return f"{value:.0f}"


def markdown(result: dict[str, Any]) -> str:
    """The per-condition table of the last night (and the default's nights)."""
    rows = ["| condition | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
            "|---|" + "---|" * len(COLUMNS)]
    for name, figures in result["conditions"].items():
        rows.append(f"| {name} | " + " | ".join(_cell(figures.get(k), kind) for k, _, kind in COLUMNS) + " |")
    nights = result.get("nights", [])
    if len(nights) > 1:
        rows += ["", "| night | facts | default held-out | default trained | earlier nights | night-1 facts |"
                     " canary Δ | verdict |", "|---|---|---|---|---|---|---|---|"]
        for night in nights:
            d = night["conditions"].get("default", {})
            rows.append(f"| {night['night']} | {night['facts']} | {_cell(d.get('recall_adapter_heldout'), 'pct')} | "
                        f"{_cell(d.get('recall_adapter_trained'), 'pct')} | {_cell(d.get('retention'), 'pct')} | "
                        f"{_cell(d.get('night1_recall'), 'pct')} | {_cell(d.get('canary_delta_pts'), 'signed')} | "
                        f"{d.get('verdict', '–')} |")
    return "\n".join(rows) + "\n"


def plots(result: dict[str, Any], out_dir: Path) -> list[str]:
    """retention.png (night-1 facts over nights) and drift.png (canary/perplexity per night)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    nights = result.get("nights", [])
    names = sorted({n for night in nights for n in night["conditions"]})
    if "default" in names:  # rag_adapter is the default's adapter under another name: one line is enough
        names = [n for n in names if n != "rag_adapter"]
    ticks = [night["night"] for night in nights]
    written = []

    def style(name: str) -> dict[str, Any]:
        return {"marker": "o", "label": name, **({"linewidth": 2.5, "zorder": 5} if name == "default" else {})}

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name in names:
        xs = [night["night"] for night in nights if name in night["conditions"]]
        ys = [night["conditions"][name].get("night1_recall") for night in nights if name in night["conditions"]]
        if any(y is not None for y in ys):
            ax.plot(xs, [None if y is None else y * 100 for y in ys], **style(name))
    ax.set_xticks(ticks)
    ax.set_xlabel("night")
    ax.set_ylabel("night-1 facts recalled, adapter only (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Retention over nights")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out_dir / "retention.png", dpi=110)
    plt.close(fig)
    written.append("retention.png")

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.2))
    for name in names:
        xs = [night["night"] for night in nights if name in night["conditions"]]
        left.plot(xs, [night["conditions"][name].get("canary_delta_pts") for night in nights
                       if name in night["conditions"]], **style(name))
        right.plot(xs, [night["conditions"][name].get("ppl_drift_pct") for night in nights
                        if name in night["conditions"]], **style(name))
    left.set_title("canary change (points)")
    right.set_title("perplexity drift (%)")
    for axis in (left, right):
        axis.set_xlabel("night")
        axis.set_xticks(ticks)
        axis.axhline(0, color="grey", linewidth=0.5)
    right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out_dir / "drift.png", dpi=110)
    plt.close(fig)
    written.append("drift.png")
    return written


def write(result: dict[str, Any], out_dir: Path) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": "memory.json", "markdown": "memory.md"}
    (out_dir / files["markdown"]).write_text(markdown(result))
    for name in plots(result, out_dir):
        files[name.removesuffix(".png")] = name
    # On disk the report names its siblings (it stays true when the directory
    # moves or is committed); the caller gets absolute paths.
    result["files"] = dict(files)
    (out_dir / files["json"]).write_text(json.dumps(result, indent=2))
    result["files"] = {k: str(out_dir / v) for k, v in files.items()}
    return result["files"]
