"""Eventlog throughput: acked appends, PUSH bursts (group commit), replay.

Starts its own eventlog daemon in a temporary CIRCADIAN_HOME under /tmp,
measures, stops it, and prints one JSON object:

- ``single_acked_appends_per_s``: sequential ``EventlogClient.append`` of one
  event each (one transaction + fsync per event: the latency-bound floor).
- ``batched_acked_events_per_s``: acked appends of 100 events per request.
- ``burst_appends_per_s``: N single-event ``Append`` frames PUSHed to
  ``events.in`` as fast as possible, timed until the log's head reaches the
  last one (the daemon group-commits whatever is queued).
- ``replay_events_per_s``: Replay pages of 5000, each event decoded on the
  client with ``Codec(Envelope)``; the median of ``--replay-passes`` full
  replays of the log (the machine may be shared: see ``load_avg_1m``).
- ``burst_over_single``: the group-commit speed-up.

Usage: ``.venv/bin/python bench/bench_eventlog.py [--burst 20000] [--single 500]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import zmq

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from protocol.codec import Codec, encode  # noqa: E402
from protocol.envelope import Envelope, new_envelope  # noqa: E402
from protocol.eventlog_api import MAX_REPLAY_LIMIT, Append, EventlogReply, GetStats, Replay  # noqa: E402
from protocol.events import ChatTurnCompleted  # noqa: E402
from protocol.service_api import ErrorReply, Ping, Pong  # noqa: E402
from services.common.eventlog_client import EventlogClient  # noqa: E402
from services.common.paths import Paths  # noqa: E402
from services.common.rpc import RpcClient, ServiceUnavailable  # noqa: E402
from services.common.zmqio import connect_dealer, connect_push  # noqa: E402

GOALS = {"burst_appends_per_s": 5_000, "replay_events_per_s": 50_000}


class _RawReplayBatch(msgspec.Struct, frozen=True, kw_only=True, tag="replay_batch", tag_field="type"):
    """ReplayBatch with each event left as raw bytes, so the bench decodes
    every one with Codec(Envelope) exactly as a consumer would."""

    request_id: str
    events: list[msgspec.Raw]
    head_seq: int


def sample_event(i: int) -> Envelope:
    # A realistic chat turn (~400 bytes on the wire).
    body = ChatTurnCompleted(
        session_id="bench-session", turn_index=i,
        user_text=f"What did I say about my sister's trip to Lisbon? (message {i})",
        assistant_text="You said Ana flies to Lisbon on Friday and stays for two weeks. " * 3,
        model="smollm2-135m-instruct", request_id=f"r{i}", prompt_tokens=57,
        completion_tokens=42, ttft_ms=321.5, tokens_per_s=12.5)
    return new_envelope(body, source="bench")


def start_daemon(paths: Paths) -> subprocess.Popen[bytes]:
    log = open(paths.logs / "eventlog.bench.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "services.eventlog"], cwd=REPO_ROOT,
                            env={**os.environ, "CIRCADIAN_HOME": str(paths.home)},
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    rpc = RpcClient(paths, "eventlog", "events.ctl", EventlogReply, timeout_s=0.5)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"eventlog exited with {proc.returncode}; see {paths.logs}")
            try:
                pong = rpc.request(Ping(request_id="ready"))
                if isinstance(pong, Pong) and pong.ready:
                    return proc
            except ServiceUnavailable:
                pass
            time.sleep(0.05)
    finally:
        rpc.close()
    proc.kill()
    raise SystemExit("eventlog did not become ready within 30 s")


def stop_daemon(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(15)


def head_seq(rpc: RpcClient) -> int:
    return rpc.request(Replay(after_seq=0, limit=1, request_id="h")).head_seq


def bench_single(client: EventlogClient, n: int) -> float:
    events = [sample_event(i) for i in range(n)]
    started = time.perf_counter()
    for env in events:
        client.append([env])
    return n / (time.perf_counter() - started)


def bench_batched(client: EventlogClient, batches: int, size: int) -> float:
    groups = [[sample_event(i) for i in range(size)] for _ in range(batches)]
    started = time.perf_counter()
    for group in groups:
        client.append(group)
    return batches * size / (time.perf_counter() - started)


def bench_burst(ctx: zmq.Context, paths: Paths, rpc: RpcClient, n: int) -> tuple[float, float]:
    frames = [encode(Append(events=[sample_event(i)])) for i in range(n)]
    target = head_seq(rpc) + n
    push = connect_push(ctx, paths.endpoint("events.in"))
    push.setsockopt(zmq.SNDHWM, 0)  # let the sender run ahead; the daemon drains at its pace
    started = time.perf_counter()
    for frame in frames:
        push.send(frame)
    sent_s = time.perf_counter() - started
    deadline = time.monotonic() + 120
    while head_seq(rpc) < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"burst did not land: head {head_seq(rpc)} < {target}")
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    push.close(linger=0)
    return n / elapsed, sent_s


def bench_replay(ctx: zmq.Context, paths: Paths) -> tuple[float, int, float]:
    reply_codec: Codec[Any] = Codec(_RawReplayBatch | ErrorReply)
    envelope_codec: Codec[Envelope] = Codec(Envelope)
    dealer = connect_dealer(ctx, paths.endpoint("events.ctl"))
    after, total, decoded_bytes = 0, 0, 0
    started = time.perf_counter()
    while True:
        dealer.send(encode(Replay(after_seq=after, limit=MAX_REPLAY_LIMIT, request_id="b")))
        if not dealer.poll(30_000, zmq.POLLIN):
            raise SystemExit("replay timed out")
        frame = dealer.recv()
        decoded_bytes += len(frame)
        page = reply_codec.decode(frame)
        if not isinstance(page, _RawReplayBatch):
            raise SystemExit(f"unexpected reply {page!r}")
        if not page.events:
            break
        envelopes = [envelope_codec.decode(raw) for raw in page.events]
        total += len(envelopes)
        after = envelopes[-1].seq  # type: ignore[assignment]
    elapsed = time.perf_counter() - started
    dealer.close(linger=0)
    return total / elapsed, total, decoded_bytes / max(total, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=500, help="sequential acked appends")
    parser.add_argument("--batches", type=int, default=50, help="acked appends of 100 events")
    parser.add_argument("--burst", type=int, default=20_000, help="events PUSHed in the burst")
    parser.add_argument("--replay-passes", type=int, default=3,
                        help="full replays of the log; the median is reported")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="circ-bench-", dir="/tmp"))
    paths = Paths(home).ensure()
    ctx = zmq.Context()
    proc = start_daemon(paths)
    try:
        client = EventlogClient(paths, timeout_s=30.0, ctx=ctx)
        rpc = RpcClient(paths, "eventlog", "events.ctl", EventlogReply, timeout_s=30.0, ctx=ctx)
        single = bench_single(client, args.single)
        batched = bench_batched(client, args.batches, 100)
        burst, burst_send_s = bench_burst(ctx, paths, rpc, args.burst)
        stats_before_replay = rpc.request(GetStats(request_id="s"))
        passes = [bench_replay(ctx, paths) for _ in range(args.replay_passes)]
        replay_rates = sorted(p[0] for p in passes)
        replay = statistics.median(replay_rates)
        _, replayed, bytes_per_event = passes[0]
        client.close()
        rpc.close()
    finally:
        exit_code = stop_daemon(proc)
        ctx.destroy(linger=0)
    result = {
        "single_acked_appends_per_s": round(single, 1),
        "batched_acked_events_per_s": round(batched, 1),
        "burst_appends_per_s": round(burst, 1),
        "replay_events_per_s": round(replay, 1),
        "replay_passes_per_s": [round(r, 1) for r in replay_rates],
        "burst_over_single": round(burst / single, 1),
        "goals": {name: {"goal": goal, "met": {"burst_appends_per_s": burst,
                                               "replay_events_per_s": replay}[name] >= goal}
                  for name, goal in GOALS.items()},
        "params": {"single": args.single, "batched": f"{args.batches}x100", "burst": args.burst,
                   "replay_page": MAX_REPLAY_LIMIT, "replayed_events": replayed,
                   "bytes_per_event": round(bytes_per_event, 1)},
        "daemon": {"commits_total": stats_before_replay.commits_total,
                   "appends_total": stats_before_replay.appends_total,
                   "db_bytes": stats_before_replay.db_bytes, "exit_code": exit_code,
                   "burst_send_s": round(burst_send_s, 3)},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                    "platform": platform.platform(), "events_db": str(paths.events_db)},
    }
    shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
