"""`circ up`, `circ down`, `circ status`."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time

from services.common.paths import Paths, current_paths


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "up":
        parser.add_argument("--timeout", type=float, default=300.0, metavar="S",
                            help="seconds to wait for every daemon to be ready (default 300)")
    if name == "down":
        parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                            help="seconds to wait for a clean stop (default 60)")
    if name == "status":
        parser.add_argument("--json", action="store_true", help="print one JSON object for scripts")


def run(args: argparse.Namespace) -> int:
    paths = current_paths()
    return {"up": up, "down": down, "status": status}[args.command](paths, args)


def _check_model() -> str | None:
    """A missing model is the most common first-run error: say it before starting."""
    from services.common.config import load_config
    from services.common.paths import resolve_model_dir
    from services.lib.models.validate import ModelError, validate_model_dir

    model_dir = resolve_model_dir(load_config().chat.model)
    try:
        validate_model_dir(model_dir)
    except ModelError as exc:
        return f"{exc}"
    return None


def up(paths: Paths, args: argparse.Namespace) -> int:
    from services.cli.daemons import ping
    from services.cli.supervise import DAEMONS, Supervisor, SupervisorError

    problem = _check_model()
    if problem:
        # One line: ModelError's message already names the file and the fix.
        print(f"circ up: {problem}", file=sys.stderr)
        return 1
    supervisor = Supervisor(paths)
    try:
        supervisor.start()
    except SupervisorError as exc:
        print(f"circ up: {exc}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.timeout
    degraded: list[str] = []
    for daemon in DAEMONS:
        announced = False
        while True:
            pong = ping(paths, daemon, timeout_s=1.0)
            if pong is not None and pong.ready:
                print(f"  {daemon:<9} ready (pid {pong.pid})", file=sys.stderr)
                break
            if pong is not None and pong.details.get("state") == "no embedder":
                # Degraded, not failed: ingest stays up and retries; chat answers without recall and
                # no turn is lost (they wait in the log). Waiting out the timeout would help nobody.
                degraded.append(daemon)
                print(f"  {daemon:<9} up without an embedder (pid {pong.pid}): {pong.details.get('problem', '')}",
                      file=sys.stderr)
                break
            states = {p.name: p for p in supervisor.processes()}
            state = states.get(daemon)
            # EXITED: it stopped with the exit code supervisord does not restart (2: a bad config,
            # a damaged event log), so waiting out the timeout would help nobody.
            if state is not None and state.state in ("FATAL", "BACKOFF", "EXITED") and not (pong and not pong.ready):
                log_file = paths.logs / f"{daemon}.log"
                print(f"circ up: {daemon} failed to start ({state.state}: {state.description}); see {log_file}",
                      file=sys.stderr)
                _alert_fatal(paths, daemon, state.state)
                _print_tail(log_file)
                return 1
            if time.monotonic() > deadline:
                print(f"circ up: {daemon} not ready after {args.timeout:g} s; see {paths.logs / (daemon + '.log')}",
                      file=sys.stderr)
                return 1
            if not announced:
                print(f"  {daemon:<9} starting{' (loading the model)' if daemon == 'chat' else ''}...",
                      file=sys.stderr)
                announced = True
            time.sleep(0.3)
    if degraded:
        print(f"circadian is up, degraded ({', '.join(degraded)}: see above; `circ doctor` checks again) "
              f"(home {paths.home}). Chat with bin/circ-chat; stop with `circ down`.", file=sys.stderr)
        return 0
    print(f"circadian is up (home {paths.home}). Chat with bin/circ-chat; stop with `circ down`.",
          file=sys.stderr)
    return 0


def _alert_fatal(paths: Paths, daemon: str, state: str) -> None:
    """`circ up` saw a daemon fail for good: raise it (best effort; the eventlog may be the one)."""
    if state != "FATAL":
        return
    try:
        from services.cli.alert_checks import check_and_list

        check_and_list(paths, {daemon: {"state": state}}, eventlog_up=daemon != "eventlog")
    except Exception:
        pass  # `circ up` already says what failed; an alert that cannot be raised must not hide it


def _print_tail(log_file, lines: int = 5) -> None:
    try:
        for line in log_file.read_text(errors="replace").splitlines()[-lines:]:
            print(f"    {line}", file=sys.stderr)
    except OSError:
        pass


def down(paths: Paths, args: argparse.Namespace) -> int:
    from services.cli.supervise import Supervisor, SupervisorError

    supervisor = Supervisor(paths)
    if not supervisor.is_running():
        print("circadian is not running.", file=sys.stderr)
        return 0
    try:
        supervisor.shutdown(args.timeout)
    except SupervisorError as exc:
        print(f"circ down: {exc}", file=sys.stderr)
        return 1
    print("circadian stopped.", file=sys.stderr)
    return 0


def last_event(paths: Paths) -> dict | None:
    if not paths.events_db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{paths.events_db}?mode=ro", uri=True, timeout=2)
        row = conn.execute("SELECT seq, type, ts, source FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        conn.close()
    except sqlite3.Error:
        return None
    return {"seq": row[0], "type": row[1], "ts": row[2], "source": row[3]} if row else None


def collect_status(paths: Paths) -> dict:
    from services.cli.daemons import ping
    from services.cli.supervise import DAEMONS, Supervisor

    supervisor = Supervisor(paths)
    running = supervisor.is_running()
    procs = {p.name: p for p in supervisor.processes()} if running else {}
    daemons = {}
    for name in DAEMONS:
        proc = procs.get(name)
        pong = ping(paths, name, timeout_s=1.0) if proc and proc.state == "RUNNING" else None
        daemons[name] = {
            "state": proc.state if proc else "STOPPED",
            "pid": proc.pid if proc and proc.pid else None,
            "uptime_s": round(proc.uptime_s, 1) if proc else 0.0,
            "ready": bool(pong and pong.ready),
            "details": dict(pong.details) if pong else {},
        }
    from services.common.heavylock import HeavyRunLock

    holder = HeavyRunLock(paths.run / "heavy.lock").holder() if paths.run.exists() else None
    from services.cli.alert_checks import check_and_list

    alerts = check_and_list(paths, daemons, eventlog_up=daemons.get("eventlog", {}).get("ready", False))
    return {"home": str(paths.home), "supervisord": running, "daemons": daemons,
            "last_event": last_event(paths), "heavy_lock": holder, "alerts": alerts}


def status(paths: Paths, args: argparse.Namespace) -> int:
    report = collect_status(paths)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["supervisord"] else 3
    print(f"home: {report['home']}")
    if not report["supervisord"]:
        print("supervisord: not running (start with `circ up`)")
    for name, d in report["daemons"].items():
        ready = "ready" if d["ready"] else "not ready"
        pid = d["pid"] or "-"
        print(f"  {name:<9} {d['state']:<9} pid {pid!s:<8} up {_duration(d['uptime_s']):<9} {ready}")
    api = report["daemons"].get("api", {}).get("details", {})
    if api.get("url"):
        auth = "bearer token required (`circ api token`)" if api.get("auth") == "token" else "loopback only, no token"
        print(f"api: {api['url']}/v1 ({auth})")
    lock = report.get("heavy_lock")
    print(f"heavy-run lock: {'held by ' + str(lock.get('holder')) + ' (pid ' + str(lock.get('pid')) + ')' if lock else 'free'}")
    ev = report["last_event"]
    if ev:
        age = _duration(max(0.0, time.time() - ev["ts"]))
        print(f"last event: #{ev['seq']} {ev['type']} from {ev['source']}, {age} ago")
    else:
        print("last event: none yet")
    for alert in report["alerts"]:  # the last day's, newest first
        age = _duration(max(0.0, time.time() - alert["ts"]))
        print(f"alert: {alert['cause']} {age} ago: {alert['message']}")
    return 0 if report["supervisord"] else 3


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
