"""A night through the real daemons: sleep, judge, promote, hot reload, and what goes wrong.

Everything runs against one instance (`circ up`, all five daemons under
supervisord), in file order; every training run is tiny (4-6 steps):

- bad input: an empty night and a night of ``#no-train`` memories end in
  ``training.failed`` (stage ``dataset``) with a message saying why; hostile
  frames on ``trainer.ctl`` and ``evaluator.ctl`` get an ErrorReply and the
  same daemon keeps answering Ping;
- a real sleep on two facts ends in ``adapter.promoted`` or ``adapter.rejected``
  (either is legitimate after 4 steps); promoted: chat reloads it and the next
  turn is answered by it; rejected: ``adapters/current`` is unchanged.
  `circ sleep` while it runs exits 4 ("already running");
- the heavy-run lock while that sleep runs: `circ status --json` names the
  trainer while it trains, the holders follow trainer -> evaluator and the
  evaluation never overlaps training (lock samples and the log's timestamps);
- hot reload made deterministic: a hand-made (zero-initialized) adapter
  promoted through AdapterStore + an ``adapter.promoted`` event is served within
  seconds (``adapter.reloaded``, Ping details, the turn record); `circ adapters
  rollback` returns chat to the previous adapter (or the base model);
- a corrupt adapter pointed at by ``current`` is refused (``chat.adapter_refused``)
  and chat keeps serving, and answering with, the adapter it had;
- a promotion broadcast while chat was down is served once chat starts;
- ``kill -9`` of the heavy-run lock's holder frees the lock at once;
- ``kill -9`` of the trainer at random moments of a sleep leaves ``current``
  absent or complete and hash-verified, no orphaned training worker, and
  staging leftovers that the next sleep removes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from protocol.codec import Codec, encode
from protocol.envelope import new_envelope, new_id
from protocol.events import AdapterPromoted
from protocol.service_api import ErrorReply, Ping, Pong
from protocol.trainer_api import (
    Evaluate,
    EvaluationResult,
    EvaluatorReply,
    GetTrainerStatus,
    SleepAccepted,
    StartSleep,
    TrainerReply,
    TrainerStatus,
)
from services.cli.chat_client import ChatClient
from services.common.eventlog_client import EventlogClient
from services.common.heavylock import HeavyRunLock
from services.common.paths import models_dir
from services.common.rpc import RemoteError, RpcClient, ServiceUnavailable
from services.common.zmqio import connect_dealer
from services.lib.adapters.store import AdapterStore

from .harness import Instance, base_env, make_home, pid_alive, wait_until

pytestmark = pytest.mark.e2e

STEPS = 4  # the judged sleep
KILL_STEPS = 6  # the sleeps killed with -9
KILL_TRIALS = 5
MAX_TOKENS = 4
FACTS = ("My cat is called Miso.", "My sister lives in Porto.")
NO_TRAIN = ("My dog is called Rex. #no-train", "I work at Acme Corp. #no-train")
FINAL_TYPES = ("training.failed", "adapter.promoted", "adapter.rejected")
VERDICT_TIMEOUT_S = 480.0  # training + evaluation of the base and the candidate, on a busy 2-core box
RELOAD_TIMEOUT_S = 20.0  # "within seconds": event or file watch, then a swap between turns
CHAT_START_TIMEOUT_S = 90.0
REPLY_TIMEOUT_MS = 10_000
EMBEDDED_MODEL = models_dir() / "smollm2-135m-instruct"


# ----------------------------------------------------------------------------- the instance


def _night_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in base_env(home).items()
           if not k.startswith(("CIRCADIAN_TRAINER_", "CIRCADIAN_EVALUATOR_"))}
    # No scheduled sleep may start behind the tests' back (the default window is 02:00-05:00).
    env["CIRCADIAN_TRAINER_WINDOW"] = ""
    # The model's own rewordings are off by default (README "A 100-fact night"); this night tests them.
    env["CIRCADIAN_TRAINER_MODEL_PARAPHRASES"] = "2"
    return env


@pytest.fixture(scope="module")
def inst() -> Iterator[Instance]:
    home = make_home()
    instance = Instance(home, _night_env(home))
    try:
        instance.up()
        for name in ("trainer", "evaluator"):
            instance.wait_ready(name, timeout_s=60)
        yield instance
    finally:
        instance.teardown()
        _kill_our_workers(instance)
        if os.environ.get("CIRCADIAN_E2E_KEEP"):
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


# ----------------------------------------------------------------------------- the log


def _events(inst: Instance, after_seq: int = 0, type_: str | None = None) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{inst.paths.events_db}?mode=ro", uri=True, timeout=5)
    try:
        sql = "SELECT seq, ts, type, source, body FROM events WHERE seq > ?"
        args: tuple[Any, ...] = (after_seq,)
        if type_:
            sql, args = sql + " AND type = ?", (after_seq, type_)
        rows = conn.execute(sql + " ORDER BY seq", args).fetchall()
    finally:
        conn.close()
    return [{"seq": seq, "ts": ts, "type": t, "source": src, "body": msgspec.msgpack.decode(body)}
            for seq, ts, t, src, body in rows]


def _head(inst: Instance) -> int:
    rows = _events(inst, 0)
    return rows[-1]["seq"] if rows else 0


def _wait_event(inst: Instance, type_: str, after_seq: int, timeout_s: float, what: str,
                **match: Any) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for event in _events(inst, after_seq, type_):
            if all(event["body"].get(k) == v for k, v in match.items()):
                return event
        return None
    try:
        return wait_until(find, timeout_s, what, interval_s=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_tail(inst, after_seq)}\n{inst.logs()}") from None


def _sleep_events(inst: Instance, after_seq: int, sleep_id: str, adapter_id: str) -> list[dict[str, Any]]:
    return [e for e in _events(inst, after_seq)
            if e["body"].get("sleep_id") == sleep_id or e["body"].get("adapter_id") == adapter_id]


def _tail(inst: Instance, after_seq: int) -> str:
    return "events:\n" + "\n".join(f"  #{e['seq']} {e['type']} {str(e['body'])[:300]}"
                                   for e in _events(inst, after_seq)[-40:])


def _log_lines(inst: Instance, name: str) -> list[dict[str, Any]]:
    lines = []
    try:
        text = (inst.paths.logs / f"{name}.log").read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            lines.append(entry)
    return lines


# ----------------------------------------------------------------------------- daemons


def _ping(inst: Instance, name: str) -> Pong | None:
    from services.cli.daemons import ping

    return ping(inst.paths, name, timeout_s=2.0)


def _trainer(inst: Instance, request: Any, timeout_s: float = 10.0) -> Any:
    client = RpcClient(inst.paths, "trainer", "trainer.ctl", TrainerReply, timeout_s=timeout_s)
    try:
        return client.request(request)
    finally:
        client.close()


def _start_sleep(inst: Instance, steps: int) -> SleepAccepted:
    reply = _trainer(inst, StartSleep(request_id=new_id("s"), steps=steps))
    assert isinstance(reply, SleepAccepted), reply
    return reply


def _chat_final(inst: Instance, message: str) -> Any:
    """One turn (no recall: what matters is which adapter answers), checked to be in the log."""
    client = ChatClient(inst.paths, max_wait_s=120)
    try:
        final = client.complete(message, max_tokens=MAX_TOKENS, recall=False)
    finally:
        client.close()
    logged = [e for e in _events(inst, final.seq - 1, "chat.turn_completed") if e["seq"] == final.seq]
    assert len(logged) == 1, f"turn {final.request_id} is not in the log at seq {final.seq}"
    assert logged[0]["body"]["adapter_id"] == final.turn.adapter_id
    return final


def _chat(inst: Instance, message: str) -> Any:
    """The logged turn record of one turn."""
    return _chat_final(inst, message).turn


def _served_adapter(inst: Instance) -> str | None:
    pong = _ping(inst, "chat")
    assert pong is not None and pong.ready, f"chat does not answer Ping\n{inst.logs()}"
    return pong.details.get("adapter") or None


def _wait_trainer_restarted(inst: Instance, old_pid: int) -> int:
    pid = inst.wait_running("trainer", not_pid=old_pid, timeout_s=60)
    wait_until(lambda: (p := _ping(inst, "trainer")) is not None and p.ready and p.pid == pid, 60,
               "the restarted trainer to answer Ping", interval_s=0.2)
    return pid


def _wait_uptime(inst: Instance, name: str, seconds: float) -> None:
    # A daemon killed younger than supervisord's startsecs counts as a failed start.
    wait_until(lambda: (p := inst.procs()[name]).state == "RUNNING" and p.uptime_s >= seconds, 30,
               f"{name} up for {seconds:g} s", interval_s=0.2)


def _teach(inst: Instance, facts: tuple[str, ...]) -> None:
    """Tell chat ``facts`` and wait until ingest has routed each to training."""
    start = _head(inst)
    for text in facts:
        seq = _chat_final(inst, text).seq
        stored = _wait_event(inst, "memory.stored", start, 30, f"ingest to remember {text!r}", turn_seq=seq)
        assert stored["body"]["route"] in ("lora", "both"), stored


def _ensure_trainable(inst: Instance) -> None:
    """A sleep needs new trainable memories to get as far as training."""
    if _trainer(inst, GetTrainerStatus(request_id="st")).new_trainable < len(FACTS):
        _teach(inst, FACTS)


def _kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 10, f"pid {pid} to die", interval_s=0.02)


def _append(inst: Instance, body: Any) -> int:
    client = EventlogClient(inst.paths)
    try:
        return client.append([new_envelope(body, source="test")], retry_s=10).seqs[0]
    finally:
        client.close()


# ----------------------------------------------------------------------------- adapters


@pytest.fixture(scope="module")
def zero_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """adapters.safetensors + adapter_config.json of a zero-initialized LoRA on the embedded model.

    ``lora_b`` starts at zero, so the adapter is valid and loads like a trained
    one but changes nothing the model says.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model

    out = tmp_path_factory.mktemp("zero-lora")
    model, _ = load_model(EMBEDDED_MODEL)
    model.freeze()
    lora = {"rank": 4, "scale": 20.0, "dropout": 0.0}
    linear_to_lora_layers(model, 2, lora)
    weights = dict(tree_flatten(model.trainable_parameters()))
    assert weights and all(k.rsplit(".", 1)[-1] in ("lora_a", "lora_b") for k in weights)
    assert all(float(mx.abs(v).max()) == 0.0 for k, v in weights.items() if k.endswith("lora_b"))
    mx.save_safetensors(str(out / "adapters.safetensors"), weights)
    (out / "adapter_config.json").write_text(json.dumps(
        {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": lora, "model": EMBEDDED_MODEL.name}))
    return out


def _make_adapter(store: AdapterStore, files: Path, note: str) -> str:
    """Stage, write and commit an adapter made of ``files``; returns its id."""
    adapter_id = store.new_id()
    staging = store.stage(adapter_id)
    for name in ("adapters.safetensors", "adapter_config.json"):
        shutil.copyfile(files / name, staging / name)
    store.commit(adapter_id, {"note": note, "made_by": "tests/e2e/test_night.py"})
    assert store.verify(adapter_id) == []
    return adapter_id


def _promote(inst: Instance, store: AdapterStore, adapter_id: str) -> tuple[str | None, int]:
    """Promote through the store and broadcast it, as the trainer does.

    Returns (previous, the log's head before the promotion): chat's file watcher
    may reload, and log ``adapter.reloaded``, before the event is appended.
    """
    head = _head(inst)
    previous = store.promote(adapter_id)
    _append(inst, AdapterPromoted(adapter_id=adapter_id, previous_id=previous, sha256=store.hashes(adapter_id)))
    return previous, head


def _assert_current_sound(store: AdapterStore) -> None:
    """``adapters/current`` is absent, or names a complete adapter whose hashes all match."""
    link = store.root / "current"
    if not link.is_symlink() and not link.exists():
        return
    assert link.is_symlink(), f"{link} is not a symlink"
    current = store.current()
    assert current is not None, f"{link} -> {os.readlink(link)} points nowhere"
    assert link.resolve() == (store.root / current).resolve()
    assert store.verify(current) == [], f"current adapter {current}: {store.verify(current)}"


# ----------------------------------------------------------------------------- workers in /proc


def _our_workers(inst: Instance) -> list[tuple[int, int]]:
    """(pid, ppid) of every live training worker of this instance."""
    marker = f"CIRCADIAN_HOME={inst.home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"services.trainer.worker" not in (entry / "cmdline").read_bytes().split(b"\0"):
                continue
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            found.append((int(entry.name), int(fields[1])))
    return found


def _orphans(inst: Instance) -> list[tuple[int, int]]:
    """Workers whose parent is not the live trainer."""
    try:
        proc = inst.procs()["trainer"]
        trainer = proc.pid if proc.state == "RUNNING" else None
    except OSError:
        trainer = None
    return [(pid, ppid) for pid, ppid in _our_workers(inst) if ppid != trainer or not pid_alive(ppid)]


def _kill_our_workers(inst: Instance) -> None:
    for pid, _ in _our_workers(inst):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ============================================================================= 6. bad input


# Wrong field types (never a valid StartSleep or Evaluate: nothing may start).
TRAINER_BAD = {
    "steps_as_string": encode({"type": "start_sleep", "request_id": "w", "steps": "many"}),
    "adapter_id_as_int": encode({"type": "rollback", "adapter_id": 42}),
}
EVALUATOR_BAD = {
    "adapter_id_as_int": encode({"type": "evaluate", "adapter_id": 7, "candidate_dir": ["x"]}),
    "facts_as_string": encode({"type": "evaluate", "adapter_id": "a", "candidate_dir": "/x", "facts": "no"}),
}


def _malformed_cases(socket: str) -> dict[str, tuple[list[bytes], str]]:
    specific = TRAINER_BAD if socket == "trainer.ctl" else EVALUATOR_BAD
    bad_utf8 = msgspec.msgpack.encode({"type": "ping", "request_id": "MARKMARK"}).replace(b"MARKMARK", b"\xff\xfe" * 4)
    cases = {
        "random_bytes": ([random.Random(1).randbytes(64)], "malformed"),
        "empty_frame": ([b""], "malformed"),
        "msgpack_int": ([encode(42)], "malformed"),
        "map_without_tag": ([encode({"request_id": "x"})], "malformed"),
        "unknown_tag": ([encode({"type": "launch_missiles", "request_id": "x"})], "malformed"),
        "invalid_utf8": ([bad_utf8], "malformed"),
        "truncated": ([encode(Ping(request_id="r" * 40))[:-5]], "malformed"),
        "deep_nesting": ([b"\x91" * 200_000 + b"\xc0"], "malformed"),
        "multi_frame": ([encode(Ping(request_id="mf")), b"extra"], "malformed"),
        "oversized": ([encode(Ping(request_id="x" * (5 * 1024 * 1024)))], "too_large"),
    }
    cases.update({name: ([frame], "malformed") for name, frame in specific.items()})
    # Well-formed but nonsensical: refused before anything starts.
    if socket == "trainer.ctl":
        cases["steps_zero"] = ([encode(StartSleep(request_id="z", steps=0))], "bad_request")
        cases["rollback_path"] = ([encode({"type": "rollback", "adapter_id": "../../etc"})], "bad_request")
    else:
        cases["no_candidate"] = ([encode({"type": "evaluate", "adapter_id": "ad-x",
                                          "candidate_dir": "/nonexistent/ad-x"})], "bad_request")
    return cases


@pytest.mark.parametrize("socket", ["trainer.ctl", "evaluator.ctl"])
def test_malformed_frames_get_error_replies_and_the_daemon_keeps_serving(
        inst: Instance, ctx: zmq.Context, socket: str) -> None:
    service, reply_type = {"trainer.ctl": ("trainer", TrainerReply),
                           "evaluator.ctl": ("evaluator", EvaluatorReply)}[socket]
    before = inst.wait_ready(service, timeout_s=30)
    codec: Codec[Any] = Codec(reply_type)
    for case, (frames, code) in _malformed_cases(socket).items():
        dealer = connect_dealer(ctx, inst.paths.endpoint(socket))
        try:
            dealer.send_multipart(frames)
            assert dealer.poll(REPLY_TIMEOUT_MS, zmq.POLLIN), f"{socket} sent no reply to {case}"
            reply = codec.decode(dealer.recv())
            assert isinstance(reply, ErrorReply), f"{socket} answered {case} with {reply!r}"
            assert reply.code == code and reply.message, f"{case}: {reply!r}"
            dealer.send(encode(Ping(request_id="after-" + case)))
            assert dealer.poll(REPLY_TIMEOUT_MS, zmq.POLLIN), f"{socket} went quiet after {case}"
            pong = codec.decode(dealer.recv())
            assert isinstance(pong, Pong) and pong.request_id == "after-" + case
        finally:
            dealer.close(linger=0)
    after = inst.wait_ready(service, timeout_s=10)
    assert (after.pid, after.started_at) == (before.pid, before.started_at), f"{service} restarted"
    assert inst.pid(service) == before.pid
    # Nothing started: no sleep, nothing judged.
    status = _trainer(inst, GetTrainerStatus(request_id="st"))
    assert isinstance(status, TrainerStatus) and status.state == "idle" and not status.sleep_id
    assert not _events(inst, 0, "training.started") and not _events(inst, 0, "evaluation.completed")


def test_a_judging_error_is_answered_and_the_evaluator_keeps_judging(inst: Instance, ctx: zmq.Context,
                                                                     zero_lora: Path) -> None:
    """A failure outside the measuring (here: the lock file cannot be opened) gets an error reply;
    it must not kill the judging thread, or every later night would wait for a verdict forever."""
    lock = inst.paths.run / "heavy.lock"
    aside = lock.with_name("heavy.lock.aside")
    if lock.exists():
        lock.rename(aside)
    lock.mkdir()
    codec: Codec[Any] = Codec(EvaluatorReply)
    request = Evaluate(request_id="judge-1", adapter_id="ad-zero", candidate_dir=str(zero_lora))
    dealer = connect_dealer(ctx, inst.paths.endpoint("evaluator.ctl"))
    try:
        dealer.send(encode(request))
        assert dealer.poll(REPLY_TIMEOUT_MS, zmq.POLLIN), "the evaluator sent no reply"
        reply = codec.decode(dealer.recv())
        assert isinstance(reply, ErrorReply) and reply.code == "internal", reply
        assert "IsADirectoryError" in reply.message and reply.request_id == "judge-1"
        lock.rmdir()
        if aside.exists():
            aside.rename(lock)
        dealer.send(encode(msgspec.structs.replace(request, request_id="judge-2")))
        assert dealer.poll(600_000, zmq.POLLIN), "the judging thread died: no verdict"
        result = codec.decode(dealer.recv())
        assert isinstance(result, EvaluationResult) and result.request_id == "judge-2", result
        assert result.evaluation.adapter_id == "ad-zero" and result.evaluation.verdict in ("promote", "reject")
    finally:
        dealer.close(linger=0)
        if lock.is_dir():
            lock.rmdir()


def _sleep_fails_at_dataset(inst: Instance) -> tuple[dict[str, Any], dict[str, Any]]:
    start = _head(inst)
    result = inst.circ("sleep", "--wait", "--json", "--steps", str(STEPS), "--timeout", "120", timeout_s=150)
    assert result.returncode == 1, f"circ sleep exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    summary = json.loads(result.stdout)
    failed = _events(inst, start, "training.failed")
    assert [e["body"]["sleep_id"] for e in failed] == [summary["sleep_id"]], _tail(inst, start)
    assert not _events(inst, start, "training.started"), "a sleep with nothing to learn started training"
    assert not (inst.paths.adapters / summary["adapter_id"]).exists()
    return summary, failed[0]["body"]


def test_an_empty_night_fails_at_the_dataset_stage(inst: Instance) -> None:
    summary, failed = _sleep_fails_at_dataset(inst)
    assert summary["verdict"] == "failed"
    assert failed["stage"] == "dataset"
    assert "no new trainable memories" in failed["error"], failed
    assert summary["error"] == failed["error"]
    assert HeavyRunLock(inst.paths.run / "heavy.lock").holder() is None


def test_a_night_of_no_train_memories_fails_at_the_dataset_stage(inst: Instance) -> None:
    start = _head(inst)
    seqs = [_chat_final(inst, text).seq for text in NO_TRAIN]
    for seq in seqs:
        stored = _wait_event(inst, "memory.stored", start, 30, f"ingest to remember turn {seq}", turn_seq=seq)
        assert "no-train" in stored["body"]["tags"], stored
    summary, failed = _sleep_fails_at_dataset(inst)
    assert failed["stage"] == "dataset" and "#no-train" in failed["error"], failed
    status = _trainer(inst, GetTrainerStatus(request_id="st"))
    assert status.new_trainable == 0 and status.last_verdict == "failed"


# ============================================================================= 1 + 5. a judged night


@dataclass
class Night:
    sleep_id: str
    adapter_id: str
    start_seq: int
    current_before: str | None
    served_before: str | None
    events: list[dict[str, Any]] = field(default_factory=list)
    # (monotonic, heavy-lock holder name or None, trainer state, evaluator busy_with)
    samples: list[tuple[float, str | None, str, str]] = field(default_factory=list)
    status_holder: dict[str, Any] | None = None
    concurrent_sleep: Any = None
    pids: dict[str, int] = field(default_factory=dict)

    def final(self) -> dict[str, Any]:
        finals = [e for e in self.events if e["type"] in FINAL_TYPES]
        assert len(finals) == 1, [e["type"] for e in self.events]
        return finals[0]

    def one(self, type_: str) -> dict[str, Any]:
        found = [e for e in self.events if e["type"] == type_]
        assert len(found) == 1, f"{type_}: {[e['type'] for e in self.events]}"
        return found[0]


def _sampler(inst: Instance, night: Night, stop: threading.Event) -> None:
    lock = HeavyRunLock(inst.paths.run / "heavy.lock")
    trainer = RpcClient(inst.paths, "trainer", "trainer.ctl", TrainerReply, timeout_s=5)
    evaluator = RpcClient(inst.paths, "evaluator", "evaluator.ctl", EvaluatorReply, timeout_s=5)
    try:
        while not stop.is_set():
            holder_before = (lock.holder() or {}).get("holder")
            try:
                status = trainer.request(GetTrainerStatus(request_id=new_id("t")))
                busy = evaluator.request(Ping(request_id=new_id("p"))).details.get("busy_with", "")
            except (ServiceUnavailable, RemoteError):
                stop.wait(0.25)
                continue
            holder_after = (lock.holder() or {}).get("holder")
            # Only samples where the holder did not change around the two questions count.
            if holder_before == holder_after:
                night.samples.append((time.monotonic(), holder_after, status.state, busy))
            stop.wait(0.25)
    finally:
        trainer.close()
        evaluator.close()


@pytest.fixture(scope="module")
def night(inst: Instance) -> Night:
    """Teach two facts, run `circ sleep --steps 4` to its verdict, watching the lock throughout."""
    store = AdapterStore(inst.paths.adapters)
    _teach(inst, FACTS)
    status = _trainer(inst, GetTrainerStatus(request_id="st"))
    assert status.new_trainable >= len(FACTS), status
    start = _head(inst)
    night = Night(sleep_id="", adapter_id="", start_seq=start, current_before=store.current(),
                  served_before=_served_adapter(inst),
                  pids={name: inst.pid(name) for name in ("trainer", "evaluator")})
    stop = threading.Event()
    sampler = threading.Thread(target=_sampler, args=(inst, night, stop), daemon=True)
    sampler.start()
    try:
        result = inst.circ("sleep", "--json", "--steps", str(STEPS))
        assert result.returncode == 0, result.stderr
        accepted = json.loads(result.stdout)
        night.sleep_id, night.adapter_id = accepted["sleep_id"], accepted["adapter_id"]
        # `circ sleep` while it runs: refused, nothing else started.
        night.concurrent_sleep = inst.circ("sleep", "--steps", str(STEPS))
        # `circ status --json` while the trainer holds the lock (it does from before
        # training.started until after training.finished).
        _wait_event(inst, "training.started", start, 120, "training.started", sleep_id=night.sleep_id)
        while night.status_holder is None:
            status_json = json.loads(inst.circ("status", "--json").stdout)
            if (status_json.get("heavy_lock") or {}).get("holder") == "trainer":
                night.status_holder = status_json["heavy_lock"]
            elif _events(inst, start, "training.finished"):
                break
        _wait_event_any(inst, FINAL_TYPES, start, VERDICT_TIMEOUT_S, night)
    finally:
        stop.set()
        sampler.join(timeout=10)
    night.events = _sleep_events(inst, start, night.sleep_id, night.adapter_id)
    return night


def _wait_event_any(inst: Instance, types: tuple[str, ...], after_seq: int, timeout_s: float, night: Night) -> None:
    def done() -> bool:
        return any(e["type"] in types for e in _sleep_events(inst, after_seq, night.sleep_id, night.adapter_id))
    try:
        wait_until(done, timeout_s, f"the verdict of sleep {night.sleep_id}", interval_s=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_tail(inst, after_seq)}\n{inst.logs()}") from None


def test_a_night_of_two_facts_ends_in_promotion_or_rejection(inst: Instance, night: Night) -> None:
    store = AdapterStore(inst.paths.adapters)
    final = night.final()
    assert final["type"] in ("adapter.promoted", "adapter.rejected"), \
        f"the sleep failed: {final['body']}\n{inst.logs()}"
    started, finished = night.one("training.started"), night.one("training.finished")
    evaluation = night.one("evaluation.completed")
    assert started["body"]["steps"] == STEPS and started["body"]["adapter_id"] == night.adapter_id
    assert set(started["body"]["source_seqs"]).isdisjoint(
        {e["seq"] for e in _events(inst, 0, "chat.turn_completed") if "#no-train" in e["body"]["user_text"]})
    assert finished["body"]["steps"] == STEPS
    # --steps is the stop rule's cap; a night shorter than one pass is never checked, so it runs them all.
    assert (finished["body"]["steps_planned"], finished["body"]["stopped_because"]) == (STEPS, "cap")
    assert started["seq"] < finished["seq"] < evaluation["seq"] < final["seq"]
    assert evaluation["body"]["adapter_id"] == night.adapter_id
    assert evaluation["body"]["verdict"] == {"adapter.promoted": "promote", "adapter.rejected": "reject"}[final["type"]]
    assert evaluation["body"]["baseline_id"] == night.current_before
    # The candidate is committed whole, with its verdict, whatever the verdict.
    assert store.verify(night.adapter_id) == []
    manifest = store.show(night.adapter_id)
    assert manifest["verdict"] == evaluation["body"]["verdict"]
    assert manifest["sleep_id"] == night.sleep_id
    assert manifest["steps"] == {"planned": STEPS, "run": STEPS, "stopped_because": "cap"}
    assert not (store.staging_root / night.adapter_id).exists()
    # The model reworded the night's questions (trainer.model_paraphrases): every proposal is
    # accounted for, kept or rejected, and the worker's scratch files are gone.
    paraphrases = manifest["dataset"]["paraphrases"]
    assert paraphrases["kept"] + paraphrases["rejected"] > 0 and paraphrases["errors"] == 0, paraphrases
    assert not (inst.paths.adapters / night.adapter_id / "paraphrasing").exists()

    if final["type"] == "adapter.promoted":
        assert final["body"]["previous_id"] == night.current_before
        assert final["body"]["sha256"] == store.hashes(night.adapter_id)
        assert store.current() == night.adapter_id
        reloaded = _wait_event(inst, "adapter.reloaded", night.start_seq, RELOAD_TIMEOUT_S,
                               "chat to reload the promoted adapter", adapter_id=night.adapter_id)
        assert reloaded["source"] == "chat"
        wait_until(lambda: _served_adapter(inst) == night.adapter_id, RELOAD_TIMEOUT_S, "Ping to name it")
        assert _chat(inst, "What is my cat called?").adapter_id == night.adapter_id
    else:
        assert final["body"]["reasons"], final
        assert store.current() == night.current_before
        assert _served_adapter(inst) == night.served_before
        assert _chat(inst, "What is my cat called?").adapter_id == night.served_before
        assert not [e for e in _events(inst, night.start_seq, "adapter.reloaded")
                    if e["body"]["adapter_id"] == night.adapter_id]


def test_circ_sleep_during_a_sleep_exits_4_already_running(inst: Instance, night: Night) -> None:
    result = night.concurrent_sleep
    assert result.returncode == 4, f"{result.returncode}: {result.stdout}{result.stderr}"
    assert "already running" in result.stderr and night.sleep_id in result.stderr
    # Only the one sleep ran.
    assert len(_events(inst, night.start_seq, "training.started")) == 1


def test_the_heavy_run_lock_separates_training_from_evaluation(inst: Instance, night: Night) -> None:
    # `circ status --json` named the trainer while it trained.
    assert night.status_holder is not None, "circ status never showed the trainer holding the lock"
    assert night.status_holder["pid"] == night.pids["trainer"]
    # ("unknown": sampled in the instant between a holder's flock and writing its name.)
    holders = [h for _, h, _, _ in night.samples if h and h != "unknown"]
    assert set(holders) == {"trainer", "evaluator"}, f"lock holders sampled: {sorted(set(holders))}"
    # Trainer first, then the evaluator, never the trainer again.
    collapsed = [h for i, h in enumerate(holders) if i == 0 or holders[i - 1] != h]
    assert collapsed == ["trainer", "evaluator"], collapsed
    for _, holder, state, busy in night.samples:
        if holder == "trainer":  # the evaluator has not even been asked yet
            assert busy == "", "the evaluator was judging while the trainer held the lock"
            assert state in ("building", "paraphrasing", "training", "saving"), state
        if holder == "evaluator":
            assert state == "evaluating", f"the trainer was {state} while the evaluator held the lock"
    # From the log: the evaluation started after training finished.
    finished, evaluation = night.one("training.finished"), night.one("evaluation.completed")
    evaluation_began = evaluation["ts"] - evaluation["body"]["duration_s"]
    assert evaluation_began >= finished["ts"] - 0.05, (finished["ts"], evaluation_began)
    judged = [e for e in _log_lines(inst, "evaluator") if e.get("event") == "evaluator.judged"
              and e.get("adapter_id") == night.adapter_id]
    assert len(judged) == 1
    # Free again once the night is over.
    assert HeavyRunLock(inst.paths.run / "heavy.lock").holder() is None


# ============================================================================= 1. hot reload, by hand


def test_a_promoted_adapter_is_hot_reloaded_and_rollback_returns(inst: Instance, zero_lora: Path) -> None:
    store = AdapterStore(inst.paths.adapters)
    before = store.current()
    assert _served_adapter(inst) == before
    adapter_id = _make_adapter(store, zero_lora, "hot reload")
    promoted_at = time.monotonic()
    previous, seq = _promote(inst, store, adapter_id)
    assert previous == before
    reloaded = _wait_event(inst, "adapter.reloaded", seq, RELOAD_TIMEOUT_S,
                           f"chat to reload {adapter_id}", adapter_id=adapter_id)
    assert reloaded["body"]["previous_id"] == before and reloaded["source"] == "chat"
    assert reloaded["body"]["reason"] in ("adapter.promoted", "adapters/current changed")
    assert _served_adapter(inst) == adapter_id
    assert time.monotonic() - promoted_at < RELOAD_TIMEOUT_S
    turn = _chat(inst, "Say hello.")
    assert turn.adapter_id == adapter_id
    assert [e for e in _log_lines(inst, "chat") if e.get("event") == "chat.adapter_reloaded"
            and e.get("adapter_id") == adapter_id]

    # `circ adapters rollback`: back to what was served before.
    seq = _head(inst)
    result = inst.circ("adapters", "rollback")
    assert result.returncode == 0, result.stderr
    assert (before or "the base model") in result.stdout
    rolled = _wait_event(inst, "adapter.rolled_back", seq, 10, "adapter.rolled_back", previous_id=adapter_id)
    assert rolled["body"]["adapter_id"] == before and rolled["source"] == "trainer"
    # (The file watcher may beat the event: the reload can be logged before adapter.rolled_back.)
    back = _wait_event(inst, "adapter.reloaded", seq, RELOAD_TIMEOUT_S,
                       "chat to reload after the rollback", adapter_id=before)
    assert back["body"]["previous_id"] == adapter_id
    assert back["body"]["reason"] in ("adapter.rolled_back", "adapters/current changed")
    assert store.current() == before
    assert _served_adapter(inst) == before
    assert _chat(inst, "Say hello again.").adapter_id == before


# ============================================================================= 2. a corrupt adapter


def test_a_corrupt_adapter_is_refused_and_chat_keeps_serving(inst: Instance, zero_lora: Path) -> None:
    store = AdapterStore(inst.paths.adapters)
    good = store.current()
    served = _served_adapter(inst)
    assert served == good
    bad = _make_adapter(store, zero_lora, "to be corrupted")
    weights = store.root / bad / "adapters.safetensors"
    data = bytearray(weights.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert any("sha256" in p for p in store.verify(bad))
    refusals_before = len([e for e in _log_lines(inst, "chat") if e.get("event") == "chat.adapter_refused"])
    # Bypass promote (which would verify): point current at it ourselves, atomically.
    seq = _head(inst)
    tmp = store.root / ".current-test.tmp"
    os.symlink(bad, tmp)
    os.replace(tmp, store.root / "current")
    _append(inst, AdapterPromoted(adapter_id=bad, previous_id=good))

    def refused() -> list[dict[str, Any]]:
        lines = [e for e in _log_lines(inst, "chat") if e.get("event") == "chat.adapter_refused"]
        return [e for e in lines[refusals_before:] if bad in e.get("error", "")]
    try:
        wait_until(refused, RELOAD_TIMEOUT_S, "chat.adapter_refused in chat.log")
        # Chat still serves the adapter it had, and answers with it.
        assert _served_adapter(inst) == served
        turn = _chat(inst, "Are you still there?")
        assert turn.adapter_id == served
        assert turn.completion_tokens > 0
        assert not [e for e in _events(inst, seq, "adapter.reloaded") if e["body"]["adapter_id"] == bad]
        assert _ping(inst, "chat").pid == inst.pid("chat")
    finally:
        # Put current back to the good adapter; the corrupt one goes away.
        if good is None:
            store.rollback_to_base()
        else:
            store.rollback(good)
        shutil.rmtree(store.root / bad, ignore_errors=True)
    assert store.current() == good
    time.sleep(1.0)  # the file watcher sees current change back: nothing to do
    assert _served_adapter(inst) == served


# ============================================================================= 3. a promotion missed while chat was down


def test_a_promotion_missed_while_chat_was_down_is_served_at_start(inst: Instance, zero_lora: Path) -> None:
    store = AdapterStore(inst.paths.adapters)
    adapter_id = _make_adapter(store, zero_lora, "missed broadcast")
    old_pid = inst.pid("chat")
    inst.supervisor.stop_process("chat")
    assert inst.procs()["chat"].state == "STOPPED"
    assert _ping(inst, "chat") is None
    _, seq = _promote(inst, store, adapter_id)
    started = time.monotonic()
    inst.supervisor.start_process("chat")
    inst.wait_running("chat", not_pid=old_pid, timeout_s=CHAT_START_TIMEOUT_S)
    inst.wait_ready("chat", timeout_s=CHAT_START_TIMEOUT_S)
    assert _served_adapter(inst) == adapter_id
    took = time.monotonic() - started
    assert took < CHAT_START_TIMEOUT_S
    reloaded = _wait_event(inst, "adapter.reloaded", seq, 10, "chat's startup adapter.reloaded",
                           adapter_id=adapter_id)
    assert reloaded["body"]["reason"] == "startup"
    ready = [e for e in _events(inst, seq, "service.started") if e["body"]["service"] == "chat"]
    assert ready and ready[-1]["body"]["details"]["adapter"] == adapter_id
    assert _chat(inst, "Hello after the restart.").adapter_id == adapter_id


# ============================================================================= 5. the lock dies with its holder


def test_kill9_of_the_lock_holder_frees_the_heavy_run_lock_at_once(inst: Instance) -> None:
    _ensure_trainable(inst)
    lock_path = inst.paths.run / "heavy.lock"
    _wait_uptime(inst, "trainer", 2.0)
    trainer = inst.pid("trainer")
    start = _head(inst)
    accepted = _start_sleep(inst, KILL_STEPS)
    holder = wait_until(lambda: (h := HeavyRunLock(lock_path).holder()) and h.get("holder") == "trainer" and h,
                        60, "the trainer to take the heavy-run lock", interval_s=0.05)
    assert holder["pid"] == trainer
    _kill9(trainer)
    lock = HeavyRunLock(lock_path)
    began = time.monotonic()
    assert lock.acquire("test", timeout_s=1), f"the lock is still held: {lock.holder()}"
    try:
        assert time.monotonic() - began < 1.0
        assert lock.holder()["holder"] == "test"
    finally:
        lock.release()
    assert HeavyRunLock(lock_path).holder() is None
    _wait_trainer_restarted(inst, trainer)
    wait_until(lambda: not _orphans(inst), 10, "no orphaned worker")
    # The killed sleep never got a verdict, and nothing it half-wrote is served.
    assert not [e for e in _sleep_events(inst, start, accepted.sleep_id, accepted.adapter_id)
                if e["type"] in ("adapter.promoted", "evaluation.completed")]
    _assert_current_sound(AdapterStore(inst.paths.adapters))


# ============================================================================= 4. kill -9 of the trainer mid-sleep


@dataclass
class Trial:
    anchor: str  # what the kill delay counts from: accepted | training.started
    delay_s: float
    sleep_id: str = ""
    adapter_id: str = ""
    reached: list[str] = field(default_factory=list)  # the sleep's events when it was killed
    leftovers: list[str] = field(default_factory=list)  # staging before it started
    cleaned: bool = False  # staging held only its own candidate once it started training
    worker: bool = False  # a training worker was running when the trainer was killed

    def describe(self) -> str:
        reached = self.reached[-1] if self.reached else "accepted"
        return f"{self.anchor}+{self.delay_s:.1f}s -> {reached}{' (worker running)' if self.worker else ''}"


def _staging(store: AdapterStore) -> list[str]:
    return sorted(p.name for p in store.staging_root.iterdir()) if store.staging_root.is_dir() else []


def _wait_evaluator_idle(inst: Instance) -> None:
    wait_until(lambda: (p := _ping(inst, "evaluator")) is not None and p.ready and not p.details.get("busy_with")
               and HeavyRunLock(inst.paths.run / "heavy.lock").holder() is None,
               60, "the evaluator to be idle and the lock free", interval_s=0.2)


def _stop_orphaned_judging(inst: Instance, adapter_id: str) -> None:
    """A kill after training.finished leaves the evaluator judging a candidate nobody will
    promote, holding the lock for minutes: kill -9 it too (supervisord restarts it)."""
    def judging() -> bool:
        pong = _ping(inst, "evaluator")
        return pong is not None and pong.details.get("busy_with") == adapter_id
    # The Evaluate request may still be on its way when the trainer dies: look for a moment.
    deadline = time.monotonic() + 3.0
    while not judging():
        if time.monotonic() > deadline:
            return
        time.sleep(0.1)
    _wait_uptime(inst, "evaluator", 2.0)
    evaluator = inst.pid("evaluator")
    _kill9(evaluator)
    inst.wait_running("evaluator", not_pid=evaluator, timeout_s=60)


def _lock_free_at_once(inst: Instance) -> bool:
    lock = HeavyRunLock(inst.paths.run / "heavy.lock")
    if not lock.acquire("test", timeout_s=1):
        return False
    lock.release()
    return True


def test_kill9_of_the_trainer_mid_sleep_leaves_a_sound_store(inst: Instance) -> None:
    _ensure_trainable(inst)
    store = AdapterStore(inst.paths.adapters)
    seed = int(os.environ.get("CIRCADIAN_E2E_SEED", "0")) or random.randrange(1, 1 << 30)
    rng = random.Random(seed)
    context = f"seed {seed}; CIRCADIAN_E2E_SEED={seed} repeats it"
    # Random moments spread over a sleep's stages: setting up (lock, cleanup,
    # dataset), the worker starting and loading the model, training, and the
    # last step / final checkpoint / adapter write / commit (the worker reports
    # step 5 of 6). A last sleep is killed as soon as it starts training: it
    # must have cleaned up after all of them.
    trials = [Trial("accepted", rng.uniform(0.0, 1.0)),
              Trial("training.started", rng.uniform(0.0, 4.0)),
              Trial("training.started", rng.uniform(4.0, 10.0)),
              Trial("training.progress", rng.uniform(0.0, 1.0)),
              Trial("training.progress", rng.uniform(1.0, 2.5))]
    assert len(trials) == KILL_TRIALS
    trials.append(Trial("training.started", 0.0))
    served = _served_adapter(inst)
    for n, trial in enumerate(trials):
        _wait_uptime(inst, "trainer", 2.0)
        _wait_evaluator_idle(inst)
        trainer = inst.pid("trainer")
        trial.leftovers = _staging(store)
        start = _head(inst)
        accepted = _start_sleep(inst, KILL_STEPS)
        trial.sleep_id, trial.adapter_id = accepted.sleep_id, accepted.adapter_id
        anchor_at = time.monotonic()
        if trial.anchor != "accepted":
            _wait_event(inst, "training.started", start, 120, f"trial {n}: training.started ({context})",
                        sleep_id=trial.sleep_id)
            anchor_at = time.monotonic()
            # The sleep removed whatever earlier killed sleeps left in staging.
            staged = _staging(store)
            assert staged == [trial.adapter_id], f"trial {n}: staging once training started: {staged} ({context})"
            trial.cleaned = True
        if trial.anchor == "training.progress":
            _wait_event(inst, "training.progress", start, 120, f"trial {n}: training.progress ({context})",
                        sleep_id=trial.sleep_id)
            anchor_at = time.monotonic()
        while time.monotonic() < anchor_at + trial.delay_s:
            time.sleep(0.02)
        trial.worker = any(ppid == trainer for _, ppid in _our_workers(inst))
        _kill9(trainer)
        trial.reached = [e["type"] for e in _sleep_events(inst, start, trial.sleep_id, trial.adapter_id)]
        # No worker outlives its trainer.
        try:
            wait_until(lambda: not _orphans(inst), 10, "orphaned workers to go")
        except AssertionError:
            orphans = _orphans(inst)
            _kill_our_workers(inst)
            raise AssertionError(f"trial {n} ({trial.describe()}): orphaned training workers "
                                 f"(pid, ppid) {orphans} ({context})") from None
        # current is absent or a complete, verified adapter: the one served before.
        _assert_current_sound(store)
        assert store.current() == served, f"trial {n} ({trial.describe()}): current {store.current()}"
        candidate = store.root / trial.adapter_id
        assert not candidate.exists() or store.verify(trial.adapter_id) == [], (trial.describe(), context)
        if "training.finished" in trial.reached:
            assert candidate.is_dir(), f"trial {n}: training.finished but {candidate} is missing"
            _stop_orphaned_judging(inst, trial.adapter_id)
        else:
            # The lock died with the trainer.
            assert _lock_free_at_once(inst), f"trial {n} ({trial.describe()}): the lock is held after " \
                f"the kill: {HeavyRunLock(inst.paths.run / 'heavy.lock').holder()}"
        _wait_trainer_restarted(inst, trainer)
    summary = f"{[t.describe() for t in trials]} ({context})"
    print(summary)
    # The kills met the sleeps in different stages, and killed sleeps did leave
    # leftovers that a later sleep removed.
    assert sum(1 for t in trials[:-1] if "training.started" in t.reached) >= 3, summary
    assert sum(1 for t in trials if t.worker) >= 2, f"too few kills met a running worker: {summary}"
    assert any(t.cleaned and set(t.leftovers) - {t.adapter_id} for t in trials), \
        f"no sleep started with leftovers to clean: {[t.leftovers for t in trials]} {summary}"
    _wait_evaluator_idle(inst)
    assert _served_adapter(inst) == served
    assert _chat(inst, "Still answering?").adapter_id == served


# ============================================================================= the end of the night


def test_the_night_ends_with_a_clean_stop(inst: Instance) -> None:
    """`circ down` after all that: every daemon that is still the one supervisord runs exits 0.

    (The evaluator has judged with MLX on its own thread: its streams must not
    abort the exit, as chat's would without clearing them.)
    """
    log = inst.paths.logs / "supervisord.log"
    offset = log.stat().st_size
    result = inst.down()
    assert result.returncode == 0, result.stderr
    with open(log, errors="replace") as handle:
        handle.seek(offset)
        stops = [line for line in handle if " stopped: " in line or " exited: " in line]
    by_daemon = {name: [line.strip() for line in stops if f": {name} (" in line]
                 for name in ("eventlog", "ingest", "chat", "trainer", "evaluator")}
    assert all(lines for lines in by_daemon.values()), by_daemon
    unclean = [line for lines in by_daemon.values() for line in lines if "(exit status 0)" not in line]
    assert not unclean, "\n".join(unclean)
