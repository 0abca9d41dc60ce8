#!/usr/bin/env python
"""Promotion to the first token served with the new adapter, through the real daemons.

Usage: .venv/bin/python bench/bench_reload.py [--quick] [--reps N] [--max-tokens N]

Goal (issue "Night"): promote -> first token with the new adapter <= 1 s.

1. A real adapter, quickly: the training worker (services.trainer.runner.
   run_worker, compute "auto", the trainer's LoRA settings from the config:
   rank, scale, layers) trains --train-steps steps on a few identity
   examples in a temporary directory.
2. A scratch instance: ``CIRCADIAN_HOME`` in a fresh /tmp/cr-XXXX, the five
   daemons started with ``bin/circ up`` (bench.memory.system.ScratchSystem;
   no scheduled sleeps) and always stopped with ``bin/circ down``.
3. The adapter is committed twice into the instance's AdapterStore (two ids,
   A and B, same files), as tests/e2e/test_night.py does by hand.
4. A warm-up turn, then promotions as the trainer makes them: ``store.promote``,
   then ``adapter.promoted`` appended (acknowledged) through EventlogClient.
   The first promotion (base model -> A) is reported on its own
   (``from_base``); then --reps promotions alternate B, A, B, ... (adapter to
   adapter, as every night after the first).

Per promotion: t0 is taken right before ``store.promote``; then at once a
chat turn (ChatClient, a fresh session, the same short message, greedy,
--max-tokens, recall off) is sent, and sent again while the finished turn
reports another adapter (chat swaps adapters between requests, so a turn
that arrived before the swap is served by the old one: counted as
``stale_turns``).
  promote_to_first_token_ms  t0 -> first ChatDelta of the first turn served
                             by the new adapter (turn.adapter_id)
  plain_ttft_ms              client send -> first ChatDelta of the same
                             message with no reload (the next turn, same
                             adapter): the baseline, measured after each
                             promotion
  reload_overhead_ms         median(promote_to_first_token) - median(plain ttft)
  chat_reload_ms             chat's own swap time (``reload_ms`` of its
                             ``adapter.reloaded`` event)
  reloaded_after_promote_ms  t0 -> the ``adapter.reloaded`` event's timestamp
                             (chat noticed, waited for the model thread, swapped)
  promote_call_ms, event_append_ms  the trainer's two steps (verify + symlink
                             swap + fsyncs; the acknowledged append)
  first_new_turn_ttft_ms     send -> first token of the first new-adapter turn
                             (the first forward pass after a swap)
Spreads are min/median/max over the --reps promotions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    emit,
    fail,
    machine_load,
    median,
    progress,
    resolve_model_or_exit,
    spread,
    wait_quiet,
)

PROG = "bench_reload"
MESSAGE = "Say hello in a few words."
GOAL_MS = 1000.0
QUICK_REPS = 3
DEFAULT_REPS = 10
TRAIN_EXAMPLES = 8
RELOAD_TIMEOUT_S = 60.0  # a promotion not served within this is a failure, not a slow figure
EVENT_TIMEOUT_S = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"{QUICK_REPS} measured promotions instead of {DEFAULT_REPS}")
    p.add_argument("--reps", type=int, help=f"measured promotions (default {DEFAULT_REPS}, quick {QUICK_REPS})")
    p.add_argument("--max-tokens", type=int, default=8, help="max_tokens of every chat turn (default 8)")
    p.add_argument("--train-steps", type=int, default=2, help="training steps of the adapter (default 2)")
    p.add_argument("--settle", type=float, default=1.0, metavar="S",
                   help="pause before each promotion, so ingest has digested the last turns (default 1.0)")
    p.add_argument("--model", help="model directory or name (default: chat's configured model)")
    p.add_argument("--keep-home", action="store_true", help="keep the temporary CIRCADIAN_HOME (logs)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="first wait up to S seconds for CPU pressure to drop (shared machines)")
    args = p.parse_args(argv)
    if args.reps is None:
        args.reps = QUICK_REPS if args.quick else DEFAULT_REPS
    if not 1 <= args.reps <= 1000:
        p.error(f"--reps must be 1..1000, not {args.reps}")
    if not 1 <= args.max_tokens <= 256:
        p.error(f"--max-tokens must be 1..256, not {args.max_tokens}")
    if not 1 <= args.train_steps <= 1000:
        p.error(f"--train-steps must be 1..1000, not {args.train_steps}")
    if not 0.0 <= args.settle <= 60.0:
        p.error(f"--settle must be 0..60 seconds, not {args.settle:g}")
    if args.wait_quiet < 0:
        p.error("--wait-quiet must be >= 0")
    return args


# -- the adapter ---------------------------------------------------------------
def train_adapter(model_dir: Path, work: Path, config: Any, steps: int) -> tuple[Path, dict[str, Any]]:
    """A few steps of the real training worker; returns (its output dir, figures)."""
    from services.trainer.checkpoints import ADAPTER_FILE, SUMMARY_FILE
    from services.trainer.identity import identity_examples
    from services.trainer.params import TrainParams
    from services.trainer.runner import run_worker

    data_dir, out_dir = work / "data", work / "adapter"
    data_dir.mkdir(parents=True)
    rows = identity_examples(config.chat.system_prompt)[:TRAIN_EXAMPLES]
    (data_dir / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    t = config.trainer
    params = TrainParams(rank=t.rank, scale=t.lora_scale, lr=t.learning_rate, num_layers=t.num_layers,
                         max_seq_len=t.max_seq_len, batch_size=1, steps=steps, steps_per_report=1,
                         steps_per_checkpoint=steps, compute="auto", anchor_share=0.0)
    started = time.perf_counter()
    result = run_worker(model_dir, data_dir, out_dir, params, resume=False, env={"OPENBLAS_NUM_THREADS": "2"},
                        on_progress=lambda p: progress(f"adapter: step {p['step']}/{p['steps']} loss {p['loss']}"))
    if not result.ok:
        fail(PROG, f"training the adapter failed ({result.status}): {result.error}")
    summary = json.loads((out_dir / SUMMARY_FILE).read_text())
    return out_dir, {"train_steps": steps, "rank": params.rank, "scale": params.scale,
                     "num_layers": params.num_layers, "lora_layers": result.started.get("lora_layers"),
                     "trainable_params": result.started.get("trainable_params"),
                     "bytes": (out_dir / ADAPTER_FILE).stat().st_size,
                     "compute": (summary.get("compute") or {}).get("weights"),
                     "train_wall_s": round(time.perf_counter() - started, 1)}


def commit_copy(store: Any, files: Path, note: str, taken: set[str]) -> str:
    """Stage, copy and commit the adapter in ``files`` under a fresh id."""
    adapter_id = store.new_id()
    while adapter_id in taken:  # new_id has a one-second stamp and 16 random bits
        adapter_id = store.new_id()
    taken.add(adapter_id)
    staging = store.stage(adapter_id)
    for name in ("adapters.safetensors", "adapter_config.json"):
        shutil.copyfile(files / name, staging / name)
    store.commit(adapter_id, {"note": note, "made_by": "bench/bench_reload.py"})
    problems = store.verify(adapter_id)
    if problems:
        fail(PROG, f"the committed adapter {adapter_id} does not verify: {'; '.join(problems)}")
    return adapter_id


# -- chat turns ------------------------------------------------------------------
def chat_turn(client: Any, max_tokens: int) -> dict[str, Any]:
    from protocol.chat_api import ChatDelta, ChatFinished, ChatStarted

    first_at = started_adapter = finished = None
    sent_at = time.perf_counter()
    for reply in client.send(MESSAGE, max_tokens=max_tokens, temperature=0.0, recall=False):
        now = time.perf_counter()
        if isinstance(reply, ChatStarted):
            started_adapter = reply.adapter_id
        elif isinstance(reply, ChatDelta):
            first_at = first_at or now
        elif isinstance(reply, ChatFinished):
            finished = reply
    done_at = time.perf_counter()
    if finished is None:
        raise RuntimeError("chat ended the turn without ChatFinished")
    first_at = first_at or done_at  # no text at all (the first token was EOS)
    turn = finished.turn
    return {"sent_at": sent_at, "first_at": first_at, "done_at": done_at, "adapter_id": turn.adapter_id,
            "started_adapter_id": started_adapter, "ttft_ms": (first_at - sent_at) * 1000,
            "chat_ttft_ms": turn.ttft_ms, "tokens": turn.completion_tokens}


class Promoter:
    """Promotes as the trainer does and measures the way to the first new-adapter token."""

    def __init__(self, system: Any, store: Any, client: Any, eventlog: Any, max_tokens: int) -> None:
        self.system, self.store, self.client, self.eventlog = system, store, client, eventlog
        self.max_tokens = max_tokens

    def head(self) -> int:
        from services.cli.cmd_night import _head_seq

        return _head_seq(self.system.paths)

    def promote_and_chat(self, target: str) -> dict[str, Any]:
        from protocol.envelope import new_envelope
        from protocol.events import AdapterPromoted

        head = self.head()
        served_before = self.store.current()
        wall0, t0 = time.time(), time.perf_counter()
        self.store.promote(target)
        promoted_at = time.perf_counter()
        sha = self.store.hashes(target)
        self.eventlog.append([new_envelope(AdapterPromoted(adapter_id=target, previous_id=served_before,
                                                           sha256={k: str(v) for k, v in sha.items()}),
                                           source="bench")], retry_s=10.0)
        appended_at = time.perf_counter()
        stale: list[dict[str, Any]] = []
        while True:
            turn = chat_turn(self.client, self.max_tokens)
            if turn["adapter_id"] == target:
                break
            stale.append({"adapter_id": turn["adapter_id"], "ttft_ms": round(turn["ttft_ms"], 1)})
            if time.perf_counter() - t0 > RELOAD_TIMEOUT_S:
                raise RuntimeError(f"chat still served {turn['adapter_id'] or 'the base model'} "
                                   f"{RELOAD_TIMEOUT_S:g} s after {target} was promoted")
        reloaded = self.reload_event(target, head)
        body = reloaded["body"] if reloaded else {}
        return {
            "from": served_before, "to": target,
            "promote_to_first_token_ms": round((turn["first_at"] - t0) * 1000, 1),
            "promote_call_ms": round((promoted_at - t0) * 1000, 1),
            "event_append_ms": round((appended_at - promoted_at) * 1000, 1),
            "stale_turns": stale,
            "first_new_turn_ttft_ms": round(turn["ttft_ms"], 1),
            "first_new_turn_chat_ttft_ms": round(turn["chat_ttft_ms"], 1),
            "chat_reload_ms": body.get("reload_ms"),
            "reload_reason": body.get("reason"),
            "reloaded_after_promote_ms": round((reloaded["ts"] - wall0) * 1000, 1) if reloaded else None,
        }

    def reload_event(self, target: str, after_seq: int) -> dict[str, Any] | None:
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while time.monotonic() < deadline:
            for event in self.system.events(("adapter.reloaded",), after_seq):
                if event["body"].get("adapter_id") == target:
                    return event
            time.sleep(0.2)
        progress(f"no adapter.reloaded event for {target} within {EVENT_TIMEOUT_S:g} s")
        return None


# -- main -------------------------------------------------------------------------
def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    model_dir = resolve_model_or_exit(PROG, args.model)
    # SIGTERM/SIGHUP must still reach the `circ down` in the finally block.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet else None
    from services.common.config import load_config
    from services.common.rpc import RemoteError, ServiceUnavailable

    config = load_config()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    try:
        progress(f"training an adapter ({args.train_steps} steps) in {work}")
        adapter_files, adapter = train_adapter(model_dir, work, config, args.train_steps)
        return with_instance(args, model_dir, adapter_files, adapter, started, quiet)
    except (RuntimeError, ServiceUnavailable, RemoteError) as exc:
        fail(PROG, str(exc))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def with_instance(args: argparse.Namespace, model_dir: Path, adapter_files: Path, adapter: dict[str, Any],
                  started: float, quiet: dict | None) -> int:
    from bench.memory.system import ScratchSystem, SystemError_
    from services.cli.chat_client import ChatClient
    from services.common.eventlog_client import EventlogClient
    from services.lib.adapters.store import AdapterStore

    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))  # short: socket paths
    system = ScratchSystem(home, keep=args.keep_home)
    client = eventlog = None
    progress(f"starting daemons in {home}")
    try:
        try:
            system.up()
        except SystemError_ as exc:
            system.keep = True  # the logs say why
            fail(PROG, f"`circ up` failed; see the logs in {system.paths.logs} ({str(exc).splitlines()[0]})")
        client = ChatClient(system.paths, max_wait_s=300.0)
        pong = client.wait_ready(180)
        eventlog = EventlogClient(system.paths, timeout_s=10.0)
        store = AdapterStore(system.paths.adapters)
        taken: set[str] = set()
        a = commit_copy(store, adapter_files, "bench reload A", taken)
        b = commit_copy(store, adapter_files, "bench reload B", taken)
        promoter = Promoter(system, store, client, eventlog, args.max_tokens)
        return measure(args, model_dir, home, pong, promoter, (a, b), adapter, started, quiet)
    except Exception:
        system.keep = True  # its logs say what went wrong
        raise
    finally:
        if client is not None:
            client.close()
        if eventlog is not None:
            eventlog.close()
        progress("stopping daemons")
        system.down()
        if system.keep:
            progress(f"kept {home}")


def measure(args: argparse.Namespace, model_dir: Path, home: Path, pong: Any, promoter: Promoter,
            ids: tuple[str, str], adapter: dict[str, Any], started: float, quiet: dict | None) -> int:
    client, max_tokens = promoter.client, args.max_tokens
    machine_start = machine_load()
    progress("warm-up turn (base model)")
    warm = chat_turn(client, max_tokens)
    time.sleep(args.settle)
    base_plain = chat_turn(client, max_tokens)
    progress(f"base model: ttft {base_plain['ttft_ms']:.0f} ms")

    time.sleep(args.settle)
    from_base = promoter.promote_and_chat(ids[0])
    progress(f"from base -> {ids[0]}: {from_base['promote_to_first_token_ms']:.0f} ms to the first token")
    reps: list[dict[str, Any]] = []
    for rep in range(args.reps):
        target = ids[(rep + 1) % 2]  # B, A, B, ...
        time.sleep(args.settle)
        run = promoter.promote_and_chat(target)
        time.sleep(args.settle)
        plain = chat_turn(client, max_tokens)
        if plain["adapter_id"] != target:
            raise RuntimeError(f"the plain turn was served by {plain['adapter_id']}, not {target}")
        run["plain_ttft_ms"] = round(plain["ttft_ms"], 1)
        run["plain_chat_ttft_ms"] = round(plain["chat_ttft_ms"], 1)
        reps.append(run)
        progress(f"rep {rep + 1}/{args.reps} -> {target}: promote->first token {run['promote_to_first_token_ms']:.0f} "
                 f"ms (stale turns {len(run['stale_turns'])}, chat reload {run['chat_reload_ms']} ms); "
                 f"plain ttft {run['plain_ttft_ms']:.0f} ms")

    def values(key: str) -> list[float]:
        return [r[key] for r in reps if r.get(key) is not None]

    p2ft, plain = values("promote_to_first_token_ms"), values("plain_ttft_ms")
    clean = [r for r in reps if not r["stale_turns"]]
    raced = [r for r in reps if r["stale_turns"]]
    overhead = round(median(p2ft) - median(plain), 1)
    reasons: dict[str, int] = {}
    for r in reps:
        reasons[str(r["reload_reason"])] = reasons.get(str(r["reload_reason"]), 0) + 1
    result = {
        "bench": "reload", "quick": args.quick, "model": model_dir.name, "reps": args.reps,
        "message": MESSAGE, "max_tokens": max_tokens, "home": str(home), "waited_for_quiet": quiet,
        "adapter": {**adapter, "ids": list(ids), "note": "one trained adapter committed under two ids"},
        "chat": {k: pong.details.get(k) for k in ("backend", "weights", "blas", "compute_reason")},
        "promote_to_first_token_ms": spread(p2ft),
        "plain_ttft_ms": spread(plain),
        "reload_overhead_ms": overhead,
        "reload_overhead_ms_per_rep": [round(r["promote_to_first_token_ms"] - r["plain_ttft_ms"], 1) for r in reps],
        "first_new_turn_ttft_ms": spread(values("first_new_turn_ttft_ms")),
        "chat_reload_ms": spread(values("chat_reload_ms")),
        "reloaded_after_promote_ms": spread(values("reloaded_after_promote_ms")),
        "promote_call_ms": spread(values("promote_call_ms")),
        "event_append_ms": spread(values("event_append_ms")),
        "stale_turns": sum(len(r["stale_turns"]) for r in reps),
        # The two modes: the swap was queued before the first turn (clean), or a turn sent right
        # after the promotion reached chat's model thread first and was served by the old adapter.
        "promote_to_first_token_ms_clean": spread([r["promote_to_first_token_ms"] for r in clean]),
        "promote_to_first_token_ms_after_stale_turn": spread([r["promote_to_first_token_ms"] for r in raced]),
        # t0 -> chat starting the swap (hearing of it), when no stale turn was in the way.
        "chat_heard_after_promote_ms": spread([round(r["reloaded_after_promote_ms"] - r["chat_reload_ms"], 1)
                                               for r in clean if r["reloaded_after_promote_ms"] is not None
                                               and r["chat_reload_ms"] is not None]),
        "reload_reasons": reasons,
        "base_model_plain_ttft_ms": round(base_plain["ttft_ms"], 1),
        "warm_up_ttft_ms": round(warm["ttft_ms"], 1),
        "from_base": from_base,
        "per_rep": reps,
        "goal": f"promote_to_first_token_ms median <= {GOAL_MS:g}",
        "pass": median(p2ft) <= GOAL_MS,
        "machine_start": machine_start,
        "machine": machine_load(),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    emit(result)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        fail(PROG, "interrupted", 130)
