#!/usr/bin/env python
"""Chat through the OpenAI-compatible API vs through circ-chat's path, in one run.

Usage: bin/circ bench api [--quick] [--reps N] [--max-tokens N] [--turn-tokens N]

Starts an isolated instance (``CIRCADIAN_HOME`` in a fresh /tmp/cbapi-XXXX,
the api on a free port) with ``bin/circ up``, and always stops it with
``bin/circ down``. Memory recall is off in chat (``CIRCADIAN_CHAT_RECALL=false``)
so both paths see the same prompt every time; ``--recall`` leaves it on.

Paths compared, same daemons, same prompt, greedy, same max_tokens:
- api: the real ``openai`` package, ``chat.completions.create(stream=True)``
  against ``http://127.0.0.1:<port>/v1`` (HTTP + SSE -> api -> ZeroMQ -> chat);
- circ-chat: ``ChatClient.send()`` over ZeroMQ straight to chat (what
  ``bin/circ-chat`` does).

(a) single turn, a new conversation each time, the two paths alternating
    (--reps pairs). TTFT = request sent -> first non-empty text at the client.
    decode tokens/s = (completion tokens - 1) / (last text - first text) at
    the client. Ratios api / circ-chat: medians over the adjacent pairs.
(b) an 8-turn conversation. api: the client resends the whole history each
    turn (as OpenAI clients do); the api maps it onto one chat session, so
    chat's KV cache is reused. circ-chat: the same turns with ``session_id``.
    TTFT per turn on each path; ratio turn 8 / turn 1 on each, and api /
    circ-chat per turn. ``api_turn8_cold_ttft_ms``: the 8th request resent a
    second time (a "regenerate"): that history is claimed already, so it is
    a new chat session seeded with it, prefilled from scratch: what the ratio
    would be without the mapping.
"""

from __future__ import annotations

import argparse
import os
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
    run_with_daemons,
    spread,
    wait_quiet,
)

PROG = "bench_api"
PROMPT = ("Write a long, detailed story about a lighthouse keeper who finds a message in a bottle. "
          "Describe the sea, the weather, and what the keeper thinks and feels.")
CONVERSATION = [
    "I'm planning a vegetable garden this spring. What should I plant first?",
    "My backyard gets about six hours of sun a day. Does that change your advice?",
    "How often should I water the tomatoes?",
    "What about pests? Aphids ate all my lettuce last year.",
    "Can I grow herbs alongside the vegetables?",
    "Which herbs are easiest for a beginner?",
    "How do I keep basil from flowering too early?",
    "Summarize the plan for my garden in a few short steps.",
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="circ bench api", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer repetitions (about a minute)")
    p.add_argument("--reps", type=int, help="alternating api/circ-chat single-turn pairs (default 5, quick 2)")
    p.add_argument("--max-tokens", type=int, default=48, help="tokens per single-turn run (default 48)")
    p.add_argument("--turn-tokens", type=int, default=24, help="max_tokens per conversation turn (default 24)")
    p.add_argument("--model", help="model directory or name (default: chat's configured model)")
    p.add_argument("--recall", action="store_true", help="leave chat's memory recall on")
    p.add_argument("--keep-home", action="store_true", help="keep the temporary CIRCADIAN_HOME (logs)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="first wait up to S seconds for the machine to be quiet")
    args = p.parse_args()
    args.reps = args.reps or (2 if args.quick else 5)
    for name in ("reps", "max_tokens", "turn_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args



class Timing:
    """Client-side times of one streamed reply."""

    def __init__(self) -> None:
        self.sent = time.perf_counter()
        self.first: float | None = None
        self.last: float | None = None
        self.text = ""
        self.tokens = 0
        self.extra: dict[str, Any] = {}

    def piece(self, text: str) -> None:
        if text:
            now = time.perf_counter()
            self.first = self.first or now
            self.last = now
            self.text += text

    def result(self) -> dict[str, Any]:
        ttft = ((self.first or time.perf_counter()) - self.sent) * 1000
        span = (self.last or 0) - (self.first or 0)
        tps = (self.tokens - 1) / span if self.tokens > 1 and span > 0 else None
        return {"ttft_ms": round(ttft, 2), "tokens": self.tokens,
                "tokens_per_s": round(tps, 2) if tps else None, "text": self.text, **self.extra}


def via_api(client: Any, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    t = Timing()
    stream = client.chat.completions.create(model="circadian", messages=messages, max_tokens=max_tokens,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        for choice in chunk.choices:
            t.piece(choice.delta.content or "")
        if chunk.usage is not None:
            t.tokens = chunk.usage.completion_tokens
        ext = (chunk.model_extra or {}).get("circadian")
        if ext:
            t.extra = {"session_id": ext["session_id"], "chat_ttft_ms": ext["ttft_ms"]}
    return t.result()


def via_chat(client: Any, message: str, max_tokens: int, session_id: str | None) -> dict[str, Any]:
    from protocol.chat_api import ChatDelta, ChatFinished

    t = Timing()
    for reply in client.send(message, session_id=session_id, max_tokens=max_tokens, temperature=0.0):
        if isinstance(reply, ChatDelta):
            t.piece(reply.text)
        elif isinstance(reply, ChatFinished):
            t.tokens = reply.turn.completion_tokens
            t.extra = {"session_id": reply.turn.session_id, "chat_ttft_ms": reply.turn.ttft_ms}
    return t.result()


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def single_turn(args: argparse.Namespace, api: Any, chat: Any) -> dict[str, Any]:
    pairs = []
    for i in range(args.reps):
        progress(f"single turn {i + 1}/{args.reps}")
        # Alternate which path goes first, so neither always runs on a warmer machine.
        if i % 2 == 0:
            a = via_api(api, [{"role": "user", "content": PROMPT}], args.max_tokens)
            c = via_chat(chat, PROMPT, args.max_tokens, None)
        else:
            c = via_chat(chat, PROMPT, args.max_tokens, None)
            a = via_api(api, [{"role": "user", "content": PROMPT}], args.max_tokens)
        pairs.append((a, c))
    return {
        "reps": args.reps, "max_tokens": args.max_tokens,
        "api_ttft_ms": spread([a["ttft_ms"] for a, _ in pairs]),
        "chat_ttft_ms": spread([c["ttft_ms"] for _, c in pairs]),
        "api_tokens_per_s": spread([a["tokens_per_s"] for a, _ in pairs if a["tokens_per_s"]]),
        "chat_tokens_per_s": spread([c["tokens_per_s"] for _, c in pairs if c["tokens_per_s"]]),
        "api_minus_chat_ttft_ms": spread([a["ttft_ms"] - c["ttft_ms"] for a, c in pairs]),
        "ratio_api_over_chat": {
            "ttft": median([ratio(a["ttft_ms"], c["ttft_ms"]) for a, c in pairs]),
            "tokens_per_s": median([r for r in (ratio(a["tokens_per_s"], c["tokens_per_s"]) for a, c in pairs) if r]),
        },
        "same_text": all(a["text"] == c["text"] for a, c in pairs),
    }


def multi_turn(args: argparse.Namespace, api: Any, chat: Any) -> dict[str, Any]:
    messages: list[dict[str, str]] = []
    api_turns, chat_turns = [], []
    session = None
    for i, text in enumerate(CONVERSATION):
        progress(f"conversation turn {i + 1}/{len(CONVERSATION)}")
        messages.append({"role": "user", "content": text})
        a = via_api(api, messages, args.turn_tokens)
        messages.append({"role": "assistant", "content": a["text"]})
        api_turns.append(a)
        c = via_chat(chat, text, args.turn_tokens, session)
        session = c["session_id"]
        chat_turns.append(c)
    cold = via_api(api, messages[:-1], args.turn_tokens)  # turn 8 resent: a new session, full prefill
    api_ttft = [t["ttft_ms"] for t in api_turns]
    chat_ttft = [t["ttft_ms"] for t in chat_turns]
    return {
        "turns": len(CONVERSATION), "turn_max_tokens": args.turn_tokens,
        "api_one_session": len({t["session_id"] for t in api_turns}) == 1,
        "api_ttft_ms": api_ttft, "chat_ttft_ms": chat_ttft,
        "api_chat_reported_ttft_ms": [t["chat_ttft_ms"] for t in api_turns],
        "api_turn8_cold_ttft_ms": cold["ttft_ms"],
        "ttft_ratio_turn8_over_turn1": {"api": ratio(api_ttft[-1], api_ttft[0]),
                                        "chat": ratio(chat_ttft[-1], chat_ttft[0]),
                                        "api_without_reuse": ratio(cold["ttft_ms"], api_ttft[0])},
        "ratio_api_over_chat_ttft_per_turn": [ratio(a, c) for a, c in zip(api_ttft, chat_ttft, strict=True)],
        "same_text_each_turn": [a["text"] == c["text"] for a, c in zip(api_turns, chat_turns, strict=True)],
    }


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    model_dir = resolve_model_or_exit(PROG, args.model)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)  # the `circ down` in finally must still run
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet else None
    home = Path(tempfile.mkdtemp(prefix="cbapi-", dir="/tmp"))
    os.environ["CIRCADIAN_HOME"] = str(home)
    os.environ["CIRCADIAN_API_PORT"] = "0"  # a free port: never clash with a running instance
    if not args.recall:
        os.environ["CIRCADIAN_CHAT_RECALL"] = "false"
    started = time.perf_counter()
    return run_with_daemons(PROG, home, args.keep_home, lambda: run(args, model_dir, home, started, quiet))


def run(args: argparse.Namespace, model_dir: Path, home: Path, started: float, quiet: dict | None) -> int:
    import openai

    from services.cli.daemons import ping
    from services.common.chat_client import ChatClient
    from services.common.paths import current_paths

    paths = current_paths()
    chat = ChatClient(paths)
    chat.wait_ready(120)
    pong = ping(paths, "api", timeout_s=5.0)
    if pong is None or not pong.ready:
        fail(PROG, "the api daemon is not ready")
    api = openai.OpenAI(base_url=pong.details["url"] + "/v1", api_key="loopback", max_retries=0, timeout=300)
    try:
        via_api(api, [{"role": "user", "content": "Hi."}], 2)  # warm both paths once
        via_chat(chat, "Hi.", 2, None)
        result: dict[str, Any] = {
            "bench": "api", "quick": args.quick, "model": model_dir.name, "home": str(home),
            "waited_for_quiet": quiet, "recall": "on" if args.recall else "off (CIRCADIAN_CHAT_RECALL=false)",
            "api_url": pong.details["url"], "machine_start": machine_load(),
            "single_turn": single_turn(args, api, chat),
            "multi_turn": multi_turn(args, api, chat),
        }
    finally:
        chat.close()
        api.close()
    result["machine_end"] = machine_load()
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    emit(result)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        fail(PROG, "interrupted", 130)
