"""`circ recall`, `circ memory list|show|stats|rebuild|edit|export|compact`, `circ forget`, `circ import`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

import msgspec

from services.common.paths import Paths, current_paths


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "recall":
        parser.add_argument("query", help="what to look for")
        parser.add_argument("--k", type=int, default=5, help="how many memories (default 5)")
        parser.add_argument("--json", action="store_true", help="print JSON")
    elif name == "memory":
        sub = parser.add_subparsers(dest="memory_command", metavar="ACTION", required=True)
        listing = sub.add_parser("list", help="stored memories, newest first")
        listing.add_argument("--limit", type=int, default=20)
        listing.add_argument("--offset", type=int, default=0)
        listing.add_argument("--json", action="store_true")
        show = sub.add_parser("show", help="one memory in full")
        show.add_argument("memory_id")
        show.add_argument("--json", action="store_true")
        stats = sub.add_parser("stats", help="how many memories, by route")
        stats.add_argument("--json", action="store_true")
        sub.add_parser("rebuild", help="recreate the index from the event log (stops and restarts ingest)")
        edit = sub.add_parser("edit", help="replace a memory's text (logged; the old text stays in the log)",
                              description="Replace the text of memory ID. The change is logged as a "
                              "memory.edited event (with the old text), the memory is redacted and "
                              "re-embedded, and recall uses the new text at once.")
        edit.add_argument("memory_id", metavar="ID")
        edit.add_argument("text", nargs="?", help="the new text (default: read from standard input)")
        export = sub.add_parser("export", help="everything remembered, with route, dates, source turn and state")
        export.add_argument("--format", choices=("jsonl", "md"), default="jsonl",
                            help="jsonl: one JSON object per memory (default); md: a Markdown list")
        compact = sub.add_parser(
            "compact", help="merge near-duplicate memories into the oldest (logged; nothing is deleted)",
            description="Compare every live memory with every other and merge near duplicates (cosine "
            "similarity at or above --threshold; chunks of one turn are never merged): the oldest is kept, "
            "the others are marked as merged into it, so they are listed (`circ memory list`) but no "
            "longer recalled or trained on. Each merge is logged as a memory.merged event and survives "
            "`circ memory rebuild`. Try --dry-run first.")
        compact.add_argument("--threshold", type=float, default=0.0, metavar="COS",
                             help="cosine similarity from 0.8 to 1 (default: ingest's, 0.90; a new turn is "
                                  "already skipped at 0.97). Only a memory that adds no word of fact "
                                  "to the older one is merged, whatever the threshold")
        compact.add_argument("--dry-run", action="store_true", help="list what would be merged; change nothing")
        compact.add_argument("--json", action="store_true", help="print JSON")
    elif name == "forget":
        parser.add_argument("memory_ids", nargs="*", metavar="MEMORY_ID", help="memories to forget")
        parser.add_argument("--match", default="", metavar="TEXT",
                            help="forget every memory whose text contains TEXT (case-insensitive)")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    elif name == "import":
        parser.add_argument("file", help="JSON-lines conversation file ({\"messages\": [...]} per line)")


def edit(paths: Paths, args: argparse.Namespace) -> int:
    from protocol.envelope import new_id
    from protocol.ingest_api import EditMemory

    text = args.text if args.text is not None else sys.stdin.read()
    if not text.strip():
        print("circ memory edit: give the new text as an argument or on standard input "
              "(to remove a memory use `circ forget ID`)", file=sys.stderr)
        return 2
    reply = _client(paths).request(EditMemory(memory_id=args.memory_id, text=text.strip(), request_id=new_id("q")))
    print(f"edited {reply.memory.memory_id}: {reply.memory.text}")
    return 0


def compact(paths: Paths, args: argparse.Namespace) -> int:
    from protocol.envelope import new_id
    from protocol.ingest_api import CompactMemories

    client = _client(paths)
    try:
        reply = client.request(CompactMemories(threshold=args.threshold, dry_run=args.dry_run,
                                               request_id=new_id("q")), timeout_s=300)
    finally:
        client.close()
    if args.json:
        _print_json(reply)
        return 0
    verb = "would merge" if reply.dry_run else "merged"
    for merge in reply.merges:
        print(f"keep {merge.kept.memory_id:<10} {merge.kept.text.replace(chr(10), ' ')[:80]}")
        for m in merge.merged:
            print(f"  {verb} {m.memory_id:<10} (cosine {m.score:.3f}) {m.text.replace(chr(10), ' ')[:70]}")
    merged = sum(len(m.merged) for m in reply.merges)
    print(f"{'dry run: ' if reply.dry_run else ''}{verb} {merged} memories into {len(reply.merges)} "
          f"(compared {reply.compared} at cosine >= {reply.threshold:g})", file=sys.stderr)
    return 0


def export(paths: Paths, fmt: str) -> int:
    """Every live memory (superseded ones too, marked), oldest first, on standard output."""
    from protocol.envelope import new_id
    from protocol.ingest_api import ListMemories

    client, memories, offset = _client(paths), [], 0
    while True:
        page = client.request(ListMemories(limit=500, offset=offset, request_id=new_id("q")))
        memories += page.memories
        offset += len(page.memories)
        if not page.memories or offset >= page.total:
            break
    memories.sort(key=lambda m: (m.turn_seq, m.chunk))
    for m in memories:
        state = "merged" if m.merged_into else "superseded" if m.superseded_by else "live"
        when = dt.datetime.fromtimestamp(m.ts, dt.UTC).isoformat(timespec="seconds")
        if fmt == "jsonl":
            print(json.dumps({"memory_id": m.memory_id, "text": m.text, "route": m.route, "state": state,
                              "superseded_by": m.superseded_by or None, "ts": m.ts, "date": when,
                              "turn_seq": m.turn_seq, "chunk": m.chunk, "session_id": m.session_id,
                              "tags": m.tags}, ensure_ascii=False))
        else:
            extra = (f", merged into {m.merged_into}" if m.merged_into
                     else f", superseded by {m.superseded_by}" if m.superseded_by else "")
            text = m.text.replace("\n", " ")
            print(f"- **{m.memory_id}** ({when}, {m.route}, turn #{m.turn_seq}, {state}{extra}): {text}")
    print(f"({len(memories)} memories)", file=sys.stderr)
    return 0


def _client(paths: Paths):
    from protocol.ingest_api import IngestReply
    from services.common.rpc import RpcClient

    return RpcClient(paths, "ingest", "ingest.ctl", IngestReply, timeout_s=30.0)


def run(args: argparse.Namespace) -> int:
    from services.common.rpc import RemoteError, ServiceUnavailable

    paths = current_paths()
    handler = {"recall": recall, "memory": memory, "forget": forget, "import": import_}[args.command]
    try:
        return handler(paths, args)
    except ServiceUnavailable as exc:
        print(f"circ {args.command}: {exc}", file=sys.stderr)
        return 3
    except RemoteError as exc:
        print(f"circ {args.command}: {exc}", file=sys.stderr)
        return 1


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _print_json(obj: Any) -> None:
    print(json.dumps(msgspec.to_builtins(obj), indent=2, ensure_ascii=False))


def recall(paths: Paths, args: argparse.Namespace) -> int:
    from protocol.envelope import new_id
    from protocol.ingest_api import Recall

    client = _client(paths)
    try:
        reply = client.request(Recall(query=args.query, k=args.k, request_id=new_id("q")))
    finally:
        client.close()
    if args.json:
        _print_json(reply)
        return 0
    if not reply.memories:
        print("no memories match.")
    for m in reply.memories:
        # "by name": found through a name the query names; its score includes the name bonus.
        how = f"{m.route}, by name" if m.name_match else m.route
        print(f"{m.score:.3f}  {m.memory_id:<10} {_when(m.ts)}  [{how}]  {m.text}")
    print(f"(embedding {reply.embed_ms:.1f} ms, search {reply.search_ms:.2f} ms)", file=sys.stderr)
    return 0


def memory(paths: Paths, args: argparse.Namespace) -> int:
    from protocol.envelope import new_id
    from protocol.ingest_api import GetMemory, GetMemoryStats, ListMemories

    if args.memory_command == "rebuild":
        return rebuild(paths)
    if args.memory_command == "edit":
        return edit(paths, args)
    if args.memory_command == "export":
        return export(paths, args.format)
    if args.memory_command == "compact":
        return compact(paths, args)
    client = _client(paths)
    try:
        match args.memory_command:
            case "list":
                reply = client.request(ListMemories(limit=args.limit, offset=args.offset, request_id=new_id("q")))
                if args.json:
                    _print_json(reply)
                    return 0
                for m in reply.memories:
                    text = m.text.replace("\n", " ")
                    state = (f" (merged into {m.merged_into})" if m.merged_into
                             else f" (superseded by {m.superseded_by})" if m.superseded_by else "")
                    print(f"{m.memory_id:<10} {_when(m.ts)}  [{m.route:<4}] {text[:90]}{state}")
                print(f"({len(reply.memories)} of {reply.total})", file=sys.stderr)
            case "show":
                reply = client.request(GetMemory(memory_id=args.memory_id, request_id=new_id("q")))
                if args.json:
                    _print_json(reply.memory)
                    return 0
                m = reply.memory
                print(f"id:      {m.memory_id} (turn #{m.turn_seq}, chunk {m.chunk})\nwhen:    {_when(m.ts)}\n"
                      f"route:   {m.route}\ntags:    {', '.join(m.tags) or '-'}\nsession: {m.session_id}\n"
                      + (f"state:   merged into {m.merged_into} (kept, no longer recalled)\n" if m.merged_into
                         else f"state:   superseded by {m.superseded_by} (kept, no longer recalled)\n"
                         if m.superseded_by else "")
                      + f"\n{m.text}")
            case "stats":
                reply = client.request(GetMemoryStats(request_id=new_id("q")))
                if args.json:
                    _print_json(reply)
                    return 0
                routes = ", ".join(f"{k} {v}" for k, v in sorted(reply.by_route.items()))
                print(f"{reply.memories} memories ({routes or 'none'}), {reply.forgotten} forgotten, "
                      f"processed up to seq {reply.cursor_seq}")
    finally:
        client.close()
    return 0


def rebuild(paths: Paths) -> int:
    from services.cli.supervise import Supervisor
    from services.common.blas import preload_openblas
    from services.ingest.rebuild import rebuild_index, swap_in

    preload_openblas()
    supervisor = Supervisor(paths)
    running = supervisor.is_running()
    if running:
        print("stopping ingest...", file=sys.stderr)
        supervisor.stop_process("ingest")
    target = paths.data / "memory.rebuild"

    def progress(seq: int, head: int) -> None:
        print(f"\r  replayed up to seq {seq} of {head}", end="", file=sys.stderr, flush=True)

    try:
        handled = rebuild_index(paths, target, progress=progress)
        print(file=sys.stderr)
        swap_in(paths, target)
    finally:
        if running:
            supervisor.start_process("ingest")
    print(f"rebuilt the memory index from {handled} logged events.", file=sys.stderr)
    return 0


def forget(paths: Paths, args: argparse.Namespace) -> int:
    from protocol.envelope import new_id
    from protocol.ingest_api import Forget

    if not args.memory_ids and not args.match:
        print("circ forget: name MEMORY_IDs or give --match TEXT", file=sys.stderr)
        return 2
    client = _client(paths)
    try:
        preview = client.request(Forget(memory_ids=args.memory_ids, match=args.match, dry_run=True,
                                        request_id=new_id("f")))
        if not preview.memories and not preview.turn_seqs:
            print("nothing to forget: no memory or logged turn matches.")
            return 0
        print(f"This will forget {len(preview.memories)} memories and erase the text of "
              f"{len(preview.turn_seqs)} logged turn(s) (seq {', '.join(map(str, preview.turn_seqs[:20]))}):")
        for m in preview.memories[:50]:
            print(f"  {m.memory_id:<10} {_when(m.ts)}  {m.text[:80]}")
        if len(preview.memories) > 50:
            print(f"  ... and {len(preview.memories) - 50} more")
        if not args.yes:
            if not sys.stdin.isatty():
                print("circ forget: not confirmed (use --yes when not at a terminal)", file=sys.stderr)
                return 1
            if input("Forget them? [y/N] ").strip().lower() not in ("y", "yes"):
                print("nothing forgotten.")
                return 1
        done = client.request(Forget(memory_ids=args.memory_ids, match=args.match, request_id=new_id("f")))
    finally:
        client.close()
    print(f"forgot {len(done.memories)} memories, erased {len(done.turn_seqs)} turn(s) (event #{done.event_seq}).")
    if done.memories:
        print("Recall no longer finds them. " + _weights_forget(paths))
    return 0


def _weights_forget(paths: Paths) -> str:
    """What happens to the weights after a forget (services/trainer/forgets.py), for the user."""
    from services.lib.adapters.store import AdapterStore
    from services.trainer.forgets import clean_fallback, unhonoured
    from services.trainer.memories import IngestMemories, MemoriesUnavailable

    store = AdapterStore(paths.adapters)
    current = store.current()
    try:
        with IngestMemories(paths, timeout_s=10.0) as ingest:
            forgotten = ingest.forgotten_ids()
    except MemoriesUnavailable:
        forgotten = None
    held = unhonoured(store, current, forgotten) if current and forgotten is not None else []
    if current and (held or forgotten is None):
        target = clean_fallback(store, forgotten or set())
        return (f"The adapter serving now ({current}) was trained on {len(held) if held else 'some'} of them: the "
                "weights forget them at the next night, which re-trains its night from the base model without "
                "them even with nothing new to learn (if that night is rejected, chat goes back to an adapter "
                "that holds none of them); `circ sleep --dry-run` shows the re-train. To stop serving it now: "
                f"`circ adapters rollback {target or 'none'}`.")
    return ("The weights hold none of them: the adapter serving now was not trained on them, and no later "
            "night or replay will be (`circ sleep --dry-run` shows what the forgets remove).")


def import_(paths: Paths, args: argparse.Namespace) -> int:
    from pathlib import Path

    from protocol.envelope import new_id
    from protocol.ingest_api import ImportFile

    path = Path(args.file).expanduser().resolve()
    if not path.is_file():
        print(f"circ import: {path} is not a file", file=sys.stderr)
        return 2
    from services.cli.daemons import ping
    from services.common.rpc_resend import request_resending

    client = _client(paths)
    try:
        # Resent to a restarted ingest (the import is idempotent, by the file's sha256): a request
        # lost with a killed ingest would otherwise be waited for the whole 300 s.
        reply = request_resending(client, ImportFile(path=str(path), request_id=new_id("i")),
                                  ping=lambda: ping(paths, "ingest", timeout_s=2.0), timeout_s=300)
    finally:
        client.close()
    print(f"imported {reply.turns} turns from {reply.file} (seq {reply.first_seq}..{reply.last_seq}).")
    return 0
