"""Fuzzing with volume: >= 20,000 generated frames on every ZeroMQ socket, 0 crashes.

tests/e2e/test_malformed.py sends one of each kind of hostile frame; this
module sends tens of thousands, generated from a seed (printed; set
``CIRCADIAN_FUZZ_SEED`` to repeat a run, ``CIRCADIAN_FUZZ_FRAMES`` to change
the count per socket): random bytes, truncated and bit-flipped msgpack,
fields of the wrong type, unknown or missing tags, invalid UTF-8, deep
nesting, multi-part messages and the odd oversized frame.

Every generated frame is first decoded here with the socket's own request
codec: one that happens to be a valid request other than Ping (it could
start a night, forget a memory or make chat generate) is counted as
``valid_not_sent`` and not sent; on ``events.in`` a valid Append that the
eventlog would accept is likewise never sent, so no fuzz frame can become an
event (checked against the log at the end). ROUTER sockets are pipelined in
windows: each message gets exactly one reply (ErrorReply or Pong), counted by
code. PULL frames get no reply: the eventlog's ``dropped_frames`` counter must
rise by exactly the number sent. At the end every daemon answers Ping with
the pid and start time it had before, supervisord agrees, and
``circ log verify`` passes. One JSON summary line per socket is printed
(run with ``-s``).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import Counter
from typing import Any

import httpx2 as httpx  # the HTTP client the openai package itself uses
import msgspec
import pytest
import zmq

from protocol.chat_api import ChatReply, ChatRequest
from protocol.codec import MAX_FRAME_BYTES, Codec, ProtocolError, encode
from protocol.eventlog_api import Append, EventlogReply, EventlogRequest, GetStats, LogStats
from protocol.ingest_api import IngestReply, IngestRequest
from protocol.openai_api import ApiReply, ApiRequest, ChatCompletionRequest, ChatMessageIn
from protocol.service_api import ErrorReply, Ping, Pong
from protocol.trainer_api import EvaluatorReply, EvaluatorRequest, TrainerReply, TrainerRequest
from services.cli.daemons import ping
from services.cli.supervise import DAEMONS as ALL_DAEMONS
from services.common.rpc import RpcClient, fresh_request_id
from services.common.zmqio import connect_dealer, connect_push

from .harness import Instance, wait_until
from .test_malformed import _envelope, _oversized

pytestmark = pytest.mark.e2e

FRAMES = int(os.environ.get("CIRCADIAN_FUZZ_FRAMES", "20000"))
HTTP_BODIES = int(os.environ.get("CIRCADIAN_FUZZ_HTTP_BODIES", "20000"))
HTTP_OVERSIZED = 2 * 1024 * 1024  # over the api's default max_body_bytes (1 MiB)
SEED = int(os.environ.get("CIRCADIAN_FUZZ_SEED", str(random.SystemRandom().randrange(2**32))))
WINDOW = 200              # requests in flight per DEALER before reading their replies
REPLY_TIMEOUT_MS = 30_000  # generous: the machine may be loaded
OVERSIZED_EVERY = 4000    # one frame in this many is > MAX_FRAME_BYTES (5 MiB each: costly)

# socket -> (daemon, request union, reply union)
ROUTERS: dict[str, tuple[str, Any, Any]] = {
    "events.ctl": ("eventlog", EventlogRequest, EventlogReply),
    "chat.ctl": ("chat", ChatRequest, ChatReply),
    "ingest.ctl": ("ingest", IngestRequest, IngestReply),
    "trainer.ctl": ("trainer", TrainerRequest, TrainerReply),
    "evaluator.ctl": ("evaluator", EvaluatorRequest, EvaluatorReply),
    "api.ctl": ("api", ApiRequest, ApiReply),
}


# -- the generator -----------------------------------------------------------------
def _members(union: Any) -> list[type]:
    return list(getattr(union, "__args__", (union,)))


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 3 else 7)
    if kind == 0:
        return rng.randrange(-2**63, 2**64)
    if kind == 1:
        return rng.choice([0.0, -1.5, 1e308, float("inf"), float("nan")])
    if kind == 2:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(0, 24)))
    if kind == 3:
        return rng.randbytes(rng.randrange(0, 24))
    if kind == 4:
        return None
    if kind == 5:
        return rng.choice([True, False])
    if kind == 6:
        return ""
    if kind == 7:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if kind == 8:
        return {str(rng.randrange(100)): _random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}
    return {"type": rng.choice(["ping", "append", "nope"]), "x": _random_value(rng, depth + 1)}


def _shaped(rng: random.Random, cls: type) -> dict[str, Any]:
    """A message with ``cls``'s tag and field names, each field a random value (mostly the wrong type)."""
    message: dict[str, Any] = {"type": cls.__struct_config__.tag}
    for field in msgspec.structs.fields(cls):
        if rng.random() < 0.8:
            message[field.name] = _random_value(rng)
    return message


def _bad_utf8(rng: random.Random, message: dict[str, Any]) -> bytes:
    """msgpack of ``message`` plus one string field whose bytes are not UTF-8."""
    marker = f"U{rng.randrange(10**9):09d}"
    frame = msgspec.msgpack.encode({**message, rng.choice(["request_id", "message", "zz"]): marker})
    return frame.replace(marker.encode(), bytes(rng.choice([0xFF, 0xFE, 0xC3, 0x80]) for _ in marker))


def _deep(rng: random.Random) -> bytes:
    depth = rng.choice([64, 500, 5_000, 50_000, 200_000])
    opener = rng.choice([b"\x91", b"\x81\xa1k"])  # a 1-array or a 1-map {"k": ...}
    return opener * depth + b"\xc0"


def _append_variants(rng: random.Random) -> dict[str, Any]:
    """An Append that decodes but that events.in must refuse (or, rarely, a mutated one)."""
    base = msgspec.to_builtins(Append(events=[_envelope(f"fuzz-{rng.randrange(10**12)}")]))
    env = base["events"][0]
    choice = rng.randrange(5)
    if choice == 0:
        env["seq"] = rng.randrange(1, 10**6)              # only the eventlog assigns seq
    elif choice == 1:
        env["msg_id"] = rng.choice(["", "m" * 201])       # 1-200 characters
    elif choice == 2:
        env["ts"] = rng.choice([float("nan"), float("inf")])
    elif choice == 3:
        env["v"] = rng.choice([-1, 2**63])
    else:
        field = rng.choice(list(env))
        env[field] = _random_value(rng)                   # usually the wrong type
        env["seq"] = 1                                    # and refused anyway if it decodes
    return base


def generate(rng: random.Random, members: list[type], pull: bool) -> list[bytes]:
    """One message (a list of frames; more than one is a multi-part message)."""
    kind = rng.randrange(12)
    if rng.randrange(OVERSIZED_EVERY) == 0:
        return [_oversized()]
    if kind == 0:
        return [rng.randbytes(rng.randrange(0, 2048))]
    if kind == 1:
        frame = encode(_shaped(rng, rng.choice(members)))
        return [frame[:rng.randrange(0, max(1, len(frame)))]]           # truncated
    if kind == 2:
        frame = bytearray(encode(_shaped(rng, rng.choice(members))))
        for _ in range(rng.randrange(1, 4)):                          # bit flips
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
        return [bytes(frame)]
    if kind in (3, 4):
        return [encode(_shaped(rng, rng.choice(members)))]             # valid shape, wrong types
    if kind == 5:
        return [encode({"type": f"no_such_{rng.randrange(1000)}", "request_id": "x"})]
    if kind == 6:
        return [encode(rng.choice([{"request_id": "x"}, [1, 2], 42, "ping", None, {}]))]  # no tag
    if kind == 7:
        return [_bad_utf8(rng, _shaped(rng, rng.choice(members)))]
    if kind == 8:
        return [_deep(rng)]
    if kind == 9:
        parts = [encode(Ping(request_id="mp"))] + [rng.randbytes(rng.randrange(0, 64))
                                                   for _ in range(rng.randrange(1, 3))]
        rng.shuffle(parts)
        return parts                                                   # multi-part
    if kind == 10 and pull:
        return [encode(_append_variants(rng))]
    if not pull and rng.random() < 0.25:  # a valid Ping now and then: the socket still serves
        return [encode(Ping(request_id=f"ok-{rng.randrange(10**6)}"))]
    return [rng.choice([b"", b"\xc0", b"\x80", b"\xc1", b"\xdf\xff\xff\xff\xff"])]  # empty, nil, {}, reserved, huge map


def _accepted_by_events_in(request: Any) -> bool:
    """What events.in commits (services/eventlog/proc.py _take_pull + core.validate_append)."""
    return isinstance(request, Append) and all(
        env.seq is None and env.msg_id and len(env.msg_id) <= 200 and math.isfinite(env.ts)
        and 0 <= env.v < 2**63 for env in request.events)


def _safe(codec: Codec[Any], frames: list[bytes], pull: bool) -> bool:
    """False for a message that is a valid request we must not send (it would do something)."""
    if len(frames) != 1:
        return True  # multi-part: refused as a whole, never decoded
    try:
        request = codec.decode(frames[0])
    except ProtocolError:
        return True
    if pull:
        return not _accepted_by_events_in(request)
    return isinstance(request, Ping)


# -- fixtures and checks ---------------------------------------------------------
@pytest.fixture(scope="module")
def baseline(instance: Instance) -> dict[str, tuple[int, float, int]]:
    """Each daemon's (Pong pid, start time, supervisord pid) before any fuzzing."""
    print(f"fuzz seed {SEED} (repeat with CIRCADIAN_FUZZ_SEED={SEED}), {FRAMES} frames per socket")
    out = {}
    for name in ALL_DAEMONS:
        pong = instance.wait_ready(name, timeout_s=60)
        out[name] = (pong.pid, pong.started_at, instance.pid(name))
    return out


def _assert_same(instance: Instance, name: str, baseline: dict[str, tuple[int, float, int]]) -> None:
    pong = instance.wait_ready(name, timeout_s=30)
    now = (pong.pid, pong.started_at, instance.pid(name))
    assert now == baseline[name], f"{name} restarted: {baseline[name]} -> {now}\n{instance.logs()}"


def _dropped_frames(instance: Instance) -> int:
    client = RpcClient(instance.paths, "eventlog", "events.ctl", EventlogReply, timeout_s=30)
    try:
        stats = client.request(GetStats(request_id=fresh_request_id()))
    finally:
        client.close()
    assert isinstance(stats, LogStats)
    return stats.dropped_frames


def _summary(socket: str, stats: Counter[str], started: float) -> None:
    print(json.dumps({"socket": socket, "seed": SEED, **dict(sorted(stats.items())),
                      "seconds": round(time.monotonic() - started, 2)}))


def _fuzz_router(instance: Instance, ctx: zmq.Context, socket: str, members: list[type],
                 request_codec: Codec[Any], reply_codec: Codec[Any], rng: random.Random) -> Counter[str]:
    stats: Counter[str] = Counter()
    dealer = connect_dealer(ctx, instance.paths.endpoint(socket))
    dealer.setsockopt(zmq.SNDHWM, 0)
    dealer.setsockopt(zmq.RCVHWM, 0)
    try:
        while stats["sent"] < FRAMES:
            in_flight = 0
            while in_flight < WINDOW and stats["sent"] < FRAMES:
                frames = generate(rng, members, pull=False)
                if not _safe(request_codec, frames, pull=False):
                    stats["valid_not_sent"] += 1
                    continue
                dealer.send_multipart(frames)
                stats["sent"] += 1
                in_flight += 1
            for _ in range(in_flight):
                assert dealer.poll(REPLY_TIMEOUT_MS, zmq.POLLIN), \
                    f"{socket}: no reply (seed {SEED}, {stats})\n{instance.logs()}"
                reply = reply_codec.decode(dealer.recv())
                stats["replies"] += 1
                if isinstance(reply, ErrorReply):
                    stats[f"reject_{reply.code}"] += 1
                elif isinstance(reply, Pong):
                    stats["pong"] += 1
                else:
                    raise AssertionError(f"{socket} answered a fuzz frame with {reply!r} (seed {SEED})")
    finally:
        dealer.close(linger=0)
    return stats


@pytest.mark.parametrize("socket", list(ROUTERS))
def test_router_survives_fuzz(instance: Instance, baseline: dict[str, tuple[int, float, int]],
                              ctx: zmq.Context, socket: str) -> None:
    """Every message gets exactly one reply: an ErrorReply (malformed/too_large) or, for a Ping, a Pong."""
    service, request_union, reply_union = ROUTERS[socket]
    rng = random.Random(f"{SEED}:{socket}")
    started = time.monotonic()
    stats = _fuzz_router(instance, ctx, socket, _members(request_union), Codec(request_union),
                         Codec(reply_union), rng)
    _summary(socket, stats, started)
    assert stats["sent"] == FRAMES
    assert stats["replies"] == stats["sent"]
    rejects = {k: v for k, v in stats.items() if k.startswith("reject_")}
    assert set(rejects) <= {"reject_malformed", "reject_too_large"}, rejects
    assert sum(rejects.values()) + stats["pong"] == stats["sent"]
    _assert_same(instance, service, baseline)


def test_events_in_survives_fuzz(instance: Instance, baseline: dict[str, tuple[int, float, int]],
                                 ctx: zmq.Context) -> None:
    """PULL: every fuzz message is dropped and counted once; none becomes an event."""
    rng = random.Random(f"{SEED}:events.in")
    codec: Codec[Any] = Codec(EventlogRequest)
    members = [*_members(EventlogRequest), Append]
    head_before = max((e["seq"] for e in instance.events()), default=0)
    dropped_before = _dropped_frames(instance)
    stats: Counter[str] = Counter()
    started = time.monotonic()
    push = connect_push(ctx, instance.paths.endpoint("events.in"))
    push.setsockopt(zmq.SNDHWM, 0)
    try:
        while stats["sent"] < FRAMES:
            frames = generate(rng, members, pull=True)
            if not _safe(codec, frames, pull=True):
                stats["valid_not_sent"] += 1
                continue
            push.send_multipart(frames)
            stats["sent"] += 1
    finally:
        push.close(linger=60_000)
    wait_until(lambda: _dropped_frames(instance) - dropped_before >= stats["sent"], 120,
               f"events.in to count {stats['sent']} dropped frames (seed {SEED})", interval_s=0.5)
    stats["rejects_dropped"] = _dropped_frames(instance) - dropped_before
    _summary("events.in", stats, started)
    assert stats["sent"] == FRAMES
    assert stats["rejects_dropped"] == stats["sent"], "each bad message counts as exactly one drop"
    new = [e for e in instance.events() if e["seq"] > head_before]
    assert all(e["source"] in ALL_DAEMONS for e in new), \
        f"a fuzz frame became an event: {[e for e in new if e['source'] not in ALL_DAEMONS][:3]}"
    _assert_same(instance, "eventlog", baseline)


def _http_body(rng: random.Random) -> bytes:
    """One generated body for POST /v1/chat/completions (JSON-ish, mostly wrong)."""
    kind = rng.randrange(9)
    shaped = {"messages": [{"role": _random_value(rng), "content": _random_value(rng)}],
              **{f.name: _random_value(rng) for f in msgspec.structs.fields(ChatCompletionRequest)
                 if f.name != "messages" and rng.random() < 0.3}}
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 2048))
    if kind == 1:
        body = msgspec.json.encode(msgspec.to_builtins(shaped, builtin_types=(bytes,), str_keys=True),
                                   enc_hook=repr)
        return body[:rng.randrange(0, len(body))]
    if kind in (2, 3):
        return msgspec.json.encode(shaped, enc_hook=repr)
    if kind == 4:
        return b"[" * rng.choice([100, 10_000, 200_000]) + b"]" * rng.randrange(2)
    if kind == 5:
        return b'{"messages": [{"role": "user", "content": "' + rng.randbytes(8).replace(b'"', b"") + b'\xff"}]}'
    if kind == 6:
        return rng.choice([b"", b"null", b"42", b'"x"', b"{}", b'{"messages": []}', b'{"messages": 7}',
                           b'{"messages": [{"role": "user"}], "n": 3}'])
    if kind == 7 and rng.randrange(500) == 0:
        return b'{"messages": "' + b"x" * HTTP_OVERSIZED + b'"}'
    return msgspec.json.encode({"messages": [_random_value(rng) for _ in range(rng.randrange(0, 3))],
                                "model": _random_value(rng)}, enc_hook=repr)


def _http_safe(body: bytes) -> bool:
    """False for a body the api would hand to chat (it would generate): never sent."""
    try:
        request = msgspec.json.decode(body, type=ChatCompletionRequest)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return True
    return not any(isinstance(m, ChatMessageIn) and m.role == "user" for m in request.messages)


def test_http_completions_survive_fuzz(instance: Instance, baseline: dict[str, tuple[int, float, int]]) -> None:
    """POST /v1/chat/completions with generated bodies: a 4xx each, never a 5xx, same process."""
    pong = ping(instance.paths, "api", timeout_s=10.0)
    assert pong is not None and pong.ready, "api is not ready"
    url = pong.details["url"] + "/v1/chat/completions"
    rng = random.Random(f"{SEED}:http")
    stats: Counter[str] = Counter()
    started = time.monotonic()
    with httpx.Client(timeout=120.0) as http:
        while stats["sent"] < HTTP_BODIES:
            body = _http_body(rng)
            if not _http_safe(body):
                stats["valid_not_sent"] += 1
                continue
            response = http.post(url, content=body, headers={"content-type": "application/json"})
            stats["sent"] += 1
            stats[f"status_{response.status_code}"] += 1
            assert response.status_code < 500, f"{response.status_code} {response.text[:300]} (seed {SEED})"
            if response.status_code in (400, 413):
                assert response.json()["error"]["message"]
    _summary("http POST /v1/chat/completions", stats, started)
    _assert_same(instance, "api", baseline)
    _assert_same(instance, "chat", baseline)


def test_all_daemons_alive_and_log_verifies(instance: Instance,
                                            baseline: dict[str, tuple[int, float, int]]) -> None:
    """After all the fuzzing: no daemon restarted, every one answers Ping, the log verifies."""
    for name in ALL_DAEMONS:
        _assert_same(instance, name, baseline)
    result = instance.circ("log", "verify", timeout_s=120)
    assert result.returncode == 0, f"circ log verify failed:\n{result.stdout}\n{result.stderr}"
    assert not [e for e in instance.events() if str(e["event_id"]).startswith("fuzz-")]


def test_oversized_frame_is_above_the_limit() -> None:
    """The generator's oversized frame really is over the codec limit (else nothing tests too_large)."""
    assert len(_oversized()) > MAX_FRAME_BYTES
