"""``python -m services.report [--out DIR]``: what the trainer runs after a night.

A child process on purpose: a report that fails or hangs (a broken
matplotlib, a full disk) costs the report, never the night or the trainer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.report",
                                     description="write the morning report (latest.html and its PNGs)")
    parser.add_argument("--out", type=Path, default=None, help="directory (default: <home>/data/reports)")
    parser.add_argument("--parent-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.parent_fd is not None:
        from services.common.lifeline import watch_parent

        watch_parent(args.parent_fd, None, 3)  # the trainer died: the report is moot
    from services.common.config import ConfigError, load_config
    from services.common.paths import current_paths
    from services.report.render import build_report

    try:
        config = load_config()
    except ConfigError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    built = build_report(current_paths(), args.out, gates=gates_of(config))
    print(built.page)
    return 0


def gates_of(config) -> dict[str, float]:
    e = config.evaluator
    return {"max_canary_drop_pts": e.max_canary_drop_pts, "max_ppl_drift_pct": e.max_ppl_drift_pct,
            "max_false_recall": e.max_false_recall}


if __name__ == "__main__":
    sys.exit(main())
