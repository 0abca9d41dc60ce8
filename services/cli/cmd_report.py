"""`circ report [--open] [--out DIR]`: the morning report, from the event log.

Reads the log read-only, so it works whether or not the daemons run. The
trainer writes the same page to ``data/reports/latest.html`` after every
night; this command rebuilds it now (or into another directory).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="write latest.html and its PNGs here (default: <home>/data/reports)")
    parser.add_argument("--open", action="store_true", help="open the page in the browser afterwards")
    parser.add_argument("--last", type=int, default=14, metavar="N", help="how many nights (default 14)")


def run(args: argparse.Namespace) -> int:
    from services.common.config import load_config
    from services.common.paths import current_paths
    from services.report.__main__ import gates_of

    if not 1 <= args.last <= 1000:
        print("circ report: --last must be 1..1000", file=sys.stderr)
        return 2
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        print(f"circ report: {args.out} is a file; give --out a directory", file=sys.stderr)
        return 2
    try:
        from services.report.render import build_report
    except ImportError as exc:  # matplotlib is a runtime dependency; a broken venv says so
        print(f"circ report: {exc}; run bin/setup again", file=sys.stderr)
        return 1
    paths = current_paths()
    try:
        built = build_report(paths, args.out, gates=gates_of(load_config()), last=args.last)
    except OSError as exc:
        print(f"circ report: could not write the report: {exc}", file=sys.stderr)
        return 1
    print(built.page)
    print(f"{built.nights} night(s), {len(built.images)} plot(s)", file=sys.stderr)
    if args.open:
        import webbrowser

        if not webbrowser.open(built.page.resolve().as_uri()):
            print("circ report: no browser found; open the file above by hand", file=sys.stderr)
    return 0
