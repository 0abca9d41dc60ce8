"""`circ log tail|export|verify|stats`: audits straight from the SQLite log.

These read ``events.db`` through a read-only connection, so they work
whether or not the daemons run, and can never change the log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from typing import Any

import msgspec

from services.common.paths import Paths, current_paths


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="log_command", metavar="ACTION", required=True)
    tail = sub.add_parser("tail", help="print the newest events, one line each")
    tail.add_argument("-n", type=int, default=20, metavar="N", help="how many events (default 20)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new events (Ctrl-C stops)")
    export = sub.add_parser("export", help="write events as JSON lines to stdout")
    export.add_argument("--since", type=int, default=0, metavar="SEQ", help="only events with seq > SEQ")
    export.add_argument("--type", action="append", default=[], metavar="T",
                        help="only events of type T (repeatable), e.g. chat.turn_completed")
    sub.add_parser("verify", help="check the file's pages are sound (SQLite quick_check), seq has no gaps, "
                               "bodies match checksums, the hash chain holds")
    stats = sub.add_parser("stats", help="count events by type, size on disk")
    stats.add_argument("--json", action="store_true", help="print JSON")


class LogMissing(Exception):
    pass


def open_log(paths: Paths):
    from services.lib.eventstore.store import connect

    if not paths.events_db.exists():
        raise LogMissing(f"no event log at {paths.events_db}: start circadian with `circ up` "
                         "(or set CIRCADIAN_HOME to the instance you mean)")
    return connect(paths.events_db, readonly=True)


def run(args: argparse.Namespace) -> int:
    paths = current_paths()
    try:
        conn = open_log(paths)
    except LogMissing as exc:
        print(f"circ log: {exc}", file=sys.stderr)
        return 1
    action = {"tail": tail, "export": export, "verify": verify, "stats": stats}[args.log_command]
    try:
        return action(conn, paths, args)
    except BrokenPipeError:  # `circ log export | head`
        return 0
    finally:
        conn.close()


def _record(row: tuple) -> dict[str, Any]:
    seq, event_id, ts, source, type_, parent_id, v, body = row
    try:
        decoded = msgspec.msgpack.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        decoded = {"_undecodable": body.hex()}
    return {"seq": seq, "event_id": event_id, "ts": ts, "source": source, "type": type_,
            "parent_id": parent_id, "v": v, "body": decoded}


COLUMNS = "seq, event_id, ts, source, type, parent_id, v, body"


def _summary(record: dict[str, Any]) -> str:
    body = record["body"] if isinstance(record["body"], dict) else {}
    match record["type"]:
        case "chat.turn_completed":
            user = str(body.get("user_text", ""))[:50].replace("\n", " ")
            reply = str(body.get("assistant_text", ""))[:50].replace("\n", " ")
            return f"session {body.get('session_id', '?')} #{body.get('turn_index', '?')}: {user!r} -> {reply!r}"
        case "service.started" | "service.failed":
            return f"{body.get('service')} pid {body.get('pid')} {body.get('error', '')}".strip()
    return ", ".join(f"{k}={v}" for k, v in body.items() if k != "type")[:100]


def _print_line(record: dict[str, Any]) -> None:
    when = dt.datetime.fromtimestamp(record["ts"]).strftime("%Y-%m-%d %H:%M:%S")
    print(f"#{record['seq']:<6} {when}  {record['type']:<22} {record['source']:<9} {_summary(record)}", flush=True)


def tail(conn, paths: Paths, args: argparse.Namespace) -> int:
    rows = conn.execute(f"SELECT {COLUMNS} FROM events ORDER BY seq DESC LIMIT ?", (max(args.n, 0),)).fetchall()
    last = 0
    for row in reversed(rows):
        _print_line(_record(row))
        last = row[0]
    if not rows:
        last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    try:
        while args.follow:
            time.sleep(0.25)  # the log is small and local: polling is simple and never misses
            for row in conn.execute(f"SELECT {COLUMNS} FROM events WHERE seq > ? ORDER BY seq", (last,)):
                _print_line(_record(row))
                last = row[0]
    except KeyboardInterrupt:
        pass
    return 0


def export(conn, paths: Paths, args: argparse.Namespace) -> int:
    sql = f"SELECT {COLUMNS} FROM events WHERE seq > ?"
    params: list[Any] = [args.since]
    if args.type:
        sql += f" AND type IN ({','.join('?' * len(args.type))})"
        params += args.type
    encoder = msgspec.json.Encoder()
    out = sys.stdout.buffer
    for row in conn.execute(sql + " ORDER BY seq", params):
        out.write(encoder.encode(_record(row)) + b"\n")
    out.flush()
    return 0


def verify(conn, paths: Paths, args: argparse.Namespace) -> int:
    from services.lib.eventstore.store import verify as verify_log

    report = verify_log(conn)
    chain = "hash chain intact" if report.hash_chain and not report.bad_hashes else (
        "no hash chain" if not report.hash_chain else f"hash chain BROKEN at seq {report.bad_hashes[:5]}")
    erased = f"; {len(report.erased)} turn(s) erased by forget (audited tombstones)" if report.erased else ""
    if report.ok:
        print(f"ok: {report.count} events, seq 1..{report.head_seq} without gaps, checksums match, {chain}{erased}")
        return 0
    if report.damaged is not None:
        from services.lib.eventstore.store import LogDamaged

        print(f"FAILED: {LogDamaged(paths.events_db, report.damaged)}", file=sys.stderr)
    print(f"FAILED: {report.count} events; gaps before seq {report.gaps[:10]}; "
          f"bad checksums at {report.bad_bodies[:10]}; {chain}", file=sys.stderr)
    return 1


def stats(conn, paths: Paths, args: argparse.Namespace) -> int:
    import json

    from services.lib.eventstore.store import stats as log_stats

    s = log_stats(conn, paths.events_db)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"{s['count']} events, head seq {s['head_seq']}, {s['db_bytes'] / 1e6:.2f} MB on disk")
    if s["first_ts"]:
        first = dt.datetime.fromtimestamp(s["first_ts"]).isoformat(timespec="seconds")
        last = dt.datetime.fromtimestamp(s["last_ts"]).isoformat(timespec="seconds")
        print(f"from {first} to {last}")
    for type_, count in s["by_type"].items():
        print(f"  {type_:<24} {count}")
    return 0
