"""`circ sleep [--wait | --dry-run] [--json]` and `circ adapters list|show|rollback|pin`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import Any

import msgspec

from services.common.paths import Paths, current_paths

FINAL_TYPES = ("training.failed", "adapter.promoted", "adapter.rejected")
STATUS_EVERY_S = 2.0


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "sleep":
        parser.add_argument("--wait", action="store_true",
                            help="follow the sleep to its verdict; exit 0 on promotion, 1 otherwise")
        parser.add_argument("--dry-run", action="store_true",
                            help="train nothing: build the dataset the sleep would train on, write it under "
                                 "data/plans/<id>/ and print the plan; exit 1 when there is nothing to learn")
        parser.epilog = ("--dry-run takes no lock, creates no adapter and logs no event; it uses only the "
                         "rewordings already cached and says how many the real night would still ask for. "
                         "Estimated time uses the seconds per step the last trained adapter measured "
                         "(adapters/<id>/training.json), else the README's figure.")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")
        parser.add_argument("--steps", type=int, metavar="N", help="training steps (default: config)")
        parser.add_argument("--timeout", type=float, default=7200.0, metavar="S",
                            help="give up waiting after S seconds (default 7200)")
    else:
        sub = parser.add_subparsers(dest="adapters_command", metavar="ACTION", required=True)
        listing = sub.add_parser("list", help="adapters, newest first, with verdict and key figures")
        listing.add_argument("--json", action="store_true")
        show = sub.add_parser("show", help="one adapter's manifest, with the forgets it honours and any "
                                           "forgotten memory it still holds")
        show.add_argument("adapter_id")
        show.add_argument("--json", action="store_true", help="print the manifest alone, as JSON")
        rollback = sub.add_parser("rollback", help="serve an earlier adapter (default: the previous one; "
                                                   "`none` for the base model)")
        rollback.add_argument("adapter_id", nargs="?")
        pin = sub.add_parser("pin", help="keep an adapter through retention")
        pin.add_argument("adapter_id")
        pin.add_argument("--unpin", action="store_true", help="release it again")


def _trainer(paths: Paths):
    from protocol.trainer_api import TrainerReply
    from services.common.rpc import RpcClient

    return RpcClient(paths, "trainer", "trainer.ctl", TrainerReply, timeout_s=10.0)


def run(args: argparse.Namespace) -> int:
    from services.common.rpc import RemoteError, ServiceUnavailable

    paths = current_paths()
    try:
        if args.command == "sleep" and getattr(args, "dry_run", False):
            from services.cli.sleep_plan import dry_run

            return dry_run(paths, args)
        if args.command == "sleep":
            return sleep(paths, args)
        return adapters(paths, args)
    except ServiceUnavailable as exc:
        print(f"circ {args.command}: {exc}", file=sys.stderr)
        return 3
    except RemoteError as exc:
        print(f"circ {args.command}: {exc}", file=sys.stderr)
        return 4 if exc.code == "busy" else 1


def _head_seq(paths: Paths) -> int:
    from services.lib.eventstore.store import connect

    if not paths.events_db.exists():
        return 0  # nothing logged yet (never started): the trainer's answer says what to do
    conn = connect(paths.events_db, readonly=True)
    try:
        return conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    finally:
        conn.close()


def sleep(paths: Paths, args: argparse.Namespace) -> int:
    from protocol.envelope import new_id
    from protocol.trainer_api import StartSleep
    from services.cli.flags import resolve_with_flags

    # The flag overrides trainer.steps for this sleep; checked by the config's own rules.
    resolve_with_flags({"trainer.steps": ("--steps", args.steps)})
    start_seq = _head_seq(paths)
    client = _trainer(paths)
    try:
        accepted = client.request(StartSleep(request_id=new_id("s"), steps=args.steps))
    finally:
        client.close()
    summary: dict[str, Any] = {"sleep_id": accepted.sleep_id, "adapter_id": accepted.adapter_id}
    if not args.wait:
        print(json.dumps(summary) if args.json else
              f"sleep {accepted.sleep_id} started (candidate {accepted.adapter_id}); follow it with `circ log tail -f`")
        return 0
    summary.update(follow(paths, accepted.sleep_id, accepted.adapter_id, start_seq, args.timeout,
                          quiet=args.json))
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0 if summary.get("verdict") == "promote" else 1


def follow(paths: Paths, sleep_id: str, adapter_id: str, after_seq: int, timeout_s: float,
           *, quiet: bool) -> dict[str, Any]:
    """Print the sleep's progress from the log until its verdict; return a summary."""
    from services.lib.eventstore.store import connect, replay

    deadline = time.monotonic() + timeout_s
    summary: dict[str, Any] = {"verdict": "unknown"}
    conn = connect(paths.events_db, readonly=True)
    polled_at = time.monotonic()
    try:
        while time.monotonic() < deadline:
            if not quiet and "counts" not in summary and time.monotonic() - polled_at >= STATUS_EVERY_S:
                polled_at = time.monotonic()
                _print_stage(paths)
            events, _ = replay(conn, after_seq, 500)
            for stored in events:
                after_seq = stored.seq or after_seq
                body = msgspec.msgpack.decode(stored.body)
                if body.get("sleep_id") != sleep_id and body.get("adapter_id") != adapter_id:
                    continue
                kind = body.get("type", "")
                if not quiet:
                    _print_progress(kind, body)
                if kind == "training.started":
                    summary["counts"] = body.get("counts", {})
                elif kind == "training.finished":
                    summary["final_loss"] = body.get("final_loss")
                elif kind == "evaluation.completed":
                    summary["metrics"], summary["reasons"] = body.get("metrics", {}), body.get("reasons", [])
                if kind in FINAL_TYPES:
                    summary["verdict"] = {"adapter.promoted": "promote", "adapter.rejected": "reject"}.get(kind, "failed")
                    if kind == "training.failed":
                        summary["error"] = body.get("error")
                    if kind == "adapter.rejected":
                        summary["reasons"] = body.get("reasons", [])
                    return summary
            time.sleep(0.5)
    finally:
        conn.close()
    summary["verdict"] = "timeout"
    return summary


def _print_stage(paths: Paths) -> None:
    """Before training starts the log is quiet: show what the trainer is doing (from its status)."""
    from protocol.envelope import new_id
    from protocol.trainer_api import GetTrainerStatus
    from services.common.rpc import RemoteError, ServiceUnavailable

    client = _trainer(paths)
    try:
        status = client.request(GetTrainerStatus(request_id=new_id("s")))
    except (ServiceUnavailable, RemoteError):
        return  # progress display only: the log decides the outcome
    finally:
        client.close()
    if status.state == "paraphrasing" and status.steps:
        print(f"\r  the model is rewording the night's questions: {status.step}/{status.steps}   ",
              end="", file=sys.stderr, flush=True)
    elif status.state == "building":
        print("\r  building the night's dataset...   ", end="", file=sys.stderr, flush=True)


def _print_progress(kind: str, body: dict) -> None:
    match kind:
        case "training.started":
            counts = ", ".join(f"{k} {v}" for k, v in body.get("counts", {}).items())
            print(f"\rtraining on {counts} ({body.get('steps')} steps)", file=sys.stderr)
        case "training.progress":
            print(f"\r  step {body['step']}/{body['steps']}  loss {body['loss']:.3f}  "
                  f"{body.get('tokens_per_s', 0):.0f} tok/s  eta {body.get('eta_s', 0):.0f}s   ",
                  end="", file=sys.stderr, flush=True)
        case "training.finished":
            print(f"\ntrained in {body.get('duration_s')} s (loss {body.get('final_loss')}); evaluating...",
                  file=sys.stderr)
        case "training.failed":
            print(f"\nsleep failed at {body.get('stage')}: {body.get('error')}", file=sys.stderr)
        case "evaluation.completed":
            figures = ", ".join(f"{k} {v:.3g}" for k, v in body.get("metrics", {}).items()
                                if not k.endswith("_base"))
            print(f"evaluation: {body.get('verdict')} ({figures})", file=sys.stderr)
        case "adapter.promoted":
            print(f"promoted {body.get('adapter_id')}; chat switches to it now", file=sys.stderr)
        case "adapter.rejected":
            print(f"rejected: {'; '.join(body.get('reasons', []))}", file=sys.stderr)


def _forgotten_ids(paths: Paths) -> set[str] | None:
    """Every forgotten memory id, asked of ingest; None when ingest is not running."""
    from services.common.rpc import RemoteError, ServiceUnavailable
    from services.trainer.memories import IngestMemories, MemoriesUnavailable

    try:
        with IngestMemories(paths, timeout_s=10.0) as ingest:
            return ingest.forgotten_ids()
    except (MemoriesUnavailable, ServiceUnavailable, RemoteError):
        return None


def _some(ids: list[str], limit: int = 8) -> str:
    return ", ".join(ids[:limit]) + (f", ... {len(ids) - limit} more" if len(ids) > limit else "")


def _held_count(store: Any, adapter_id: str, forgotten: set[str] | None) -> int | None:
    """Forgotten memories the adapter was trained on; None when unknown (ingest down, broken manifest)."""
    from services.trainer.forgets import unhonoured

    if forgotten is None:
        return None
    try:
        return len(unhonoured(store, adapter_id, forgotten))
    except Exception:  # a broken manifest is listed as broken already
        return None


def _holds(store: Any, adapter_id: str, forgotten: set[str] | None) -> str:
    """`circ adapters list`'s mark for an adapter trained on memories forgotten since."""
    held = _held_count(store, adapter_id, forgotten)
    return f"  ! holds {held} forgotten" if held else ""


def adapters(paths: Paths, args: argparse.Namespace) -> int:
    from protocol.envelope import new_id
    from protocol.trainer_api import Pin, Rollback
    from services.lib.adapters.store import AdapterStore

    store = AdapterStore(paths.adapters)
    match args.adapters_command:
        case "list":
            infos = store.list()
            forgotten = _forgotten_ids(paths) if infos else set()
            if args.json:
                print(json.dumps([{**msgspec.to_builtins(i), "holds_forgotten": _held_count(store, i.adapter_id, forgotten)}
                                  for i in infos], indent=2))
                return 0
            if not infos:
                print("no adapters yet: the first sleep makes one (`circ sleep --wait`).")
            for info in infos:
                data = msgspec.to_builtins(info)
                mark = "*" if data.get("current") else " "
                pin = " pinned" if data.get("pinned") else ""
                figures = data.get("figures") or {}
                shown = ", ".join(f"{k} {v:.3g}" for k, v in list(figures.items())[:4] if isinstance(v, (int, float)))
                created = data.get("created")
                when = (dt.datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M") if isinstance(created, (int, float))
                        else str(created or "")[:16].replace("T", " "))
                print(f"{mark} {data['adapter_id']:<28} {when:<17} {data.get('verdict') or '-':<8}{pin} {shown}"
                      + _holds(store, info.adapter_id, forgotten))
            if forgotten is None and infos:
                print("(ingest is not running: which adapters hold a forgotten memory is not shown)")
            return 0
        case "show":
            from services.trainer.forgets import honoured, unhonoured

            manifest = store.show(args.adapter_id)
            if args.json:
                print(json.dumps(manifest, indent=2, default=str))
                return 0
            kept = honoured(manifest)
            print(f"adapter {args.adapter_id}{' (current)' if manifest.get('current') else ''}: "
                  f"verdict {manifest.get('verdict') or 'pending'}, created {str(manifest.get('created', ''))[:19]}")
            print(f"honours forgets: {len(kept)} memor{'y' if len(kept) == 1 else 'ies'} forgotten before its "
                  f"dataset was built" + (f" ({_some(kept)})" if kept else ""))
            forgotten = _forgotten_ids(paths)
            if forgotten is None:
                print("holds forgotten: unknown (ingest is not running: start it with `circ up`)")
            else:
                held = unhonoured(store, args.adapter_id, forgotten, manifest)
                print(f"holds forgotten: {len(held)}" + (f" ({_some(held)}): trained on memories forgotten since; "
                                                         "the next night re-trains without them" if held else ""))
            retrain = (manifest.get("dataset") or {}).get("retrain") if isinstance(manifest.get("dataset"), dict) else None
            if isinstance(retrain, dict):
                print(f"re-trained: {retrain.get('reason', '')}")
            print(json.dumps(manifest, indent=2, default=str))
            return 0
        case "rollback":
            client = _trainer(paths)
            try:
                reply = client.request(Rollback(adapter_id=args.adapter_id, request_id=new_id("a")))
            finally:
                client.close()
            print(f"now serving {reply.current or 'the base model'} (was {reply.previous or 'the base model'}).")
            return 0
        case "pin":
            client = _trainer(paths)
            try:
                reply = client.request(Pin(adapter_id=args.adapter_id, pinned=not args.unpin, request_id=new_id("a")))
            finally:
                client.close()
            print(f"pinned: {', '.join(reply.pinned) or 'none'}")
            return 0
    return 2
