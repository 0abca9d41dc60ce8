"""What a person does at a terminal, against the real daemons under supervisord.

- Stopping a reply: `CancelChat`, a client that disconnects mid-reply
  (chat's ROUTER_MANDATORY send fails), and Ctrl-C in `circ-chat`. Each time
  generation stops early (fewer tokens than asked), the partial turn is
  logged with ``finish_reason == "cancelled"``, and the same chat process
  answers the next request.
- The interactive `circ-chat` on a pseudo-terminal (stdlib ``pty``): /help,
  /new, an unknown command, multi-line input (trailing backslash and a
  triple-quote block), streamed replies, /quit, readline history.
- `circ log tail -f` printing an event committed after it started.
- `circ doctor` (human and --json) describing the running instance.

One instance for the module (`circ up`); replies are short (few tokens) except
the ones that get cancelled, which stop within a token or two of the cancel.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from protocol.chat_api import ChatDelta, ChatFinished, ChatReply, ChatStarted, SendMessage
from protocol.codec import Codec, encode
from protocol.envelope import new_id
from services.cli.chat_client import ChatClient
from services.common.paths import REPO_ROOT
from services.common.zmqio import connect_dealer

from .harness import CIRC, CIRC_CHAT, DAEMONS, TURN_TYPE, Instance, wait_until
from .terminal import Terminal

pytestmark = pytest.mark.e2e

# Asked for, never reached: a cancelled reply must stop long before.
LONG_MAX_TOKENS = 2000
# Greedy, the embedded model answers this with "1, 2, 3, ..." and had not stopped
# after 200 tokens; cancels come after the first token or two. Sent verbatim
# (no unique tag: a tag can change the greedy reply into a 7-token one).
LONG_PROMPT = "List the numbers from 1 to 1000, separated by commas."
# Fail fast instead of waiting for LONG_MAX_TOKENS when a cancel is ignored.
IGNORED_CANCEL_DELTAS = 200
SHORT_MAX_TOKENS = 8
WAIT_S = 60.0  # for any single reply or line of output: a hang fails, slowness does not
REPLY: Codec[Any] = Codec(ChatReply)


def _tag(text: str) -> str:
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def _turn_by_request(instance: Instance, request_id: str) -> dict[str, Any] | None:
    turns = [e for e in instance.events(TURN_TYPE) if e["body"]["request_id"] == request_id]
    assert len(turns) <= 1, turns
    return turns[0] if turns else None


def _turn_by_text(instance: Instance, user_text: str) -> dict[str, Any]:
    turns = [e for e in instance.events(TURN_TYPE) if e["body"]["user_text"] == user_text]
    assert len(turns) == 1, f"expected one logged turn for {user_text!r}, found {len(turns)}"
    return turns[0]


@pytest.fixture
def client(instance: Instance) -> Iterator[ChatClient]:
    ctx = zmq.Context()
    chat = ChatClient(instance.paths, ctx=ctx, max_wait_s=WAIT_S)
    try:
        yield chat
    finally:
        chat.close()
        ctx.destroy(linger=0)


def _still_serving(instance: Instance, client: ChatClient, chat_pid: int, session_id: str | None = None,
                   turn_index: int = 0) -> None:
    """The same chat process answers a new request in full (no restart by supervisord)."""
    message = _tag("Say OK.")
    done = client.complete(message, session_id=session_id, max_tokens=SHORT_MAX_TOKENS, recall=False)
    assert done.turn.finish_reason in ("stop", "length"), done.turn
    assert done.turn.turn_index == turn_index
    assert done.turn.assistant_text.strip()
    assert _turn_by_text(instance, message)["seq"] == done.seq
    assert instance.pid("chat") == chat_pid


# ------------------------------------------------------------------ cancelling a reply


def test_cancel_chat_stops_generation_and_logs_the_partial_turn(instance: Instance, client: ChatClient) -> None:
    chat_pid = instance.pid("chat")
    request_id = new_id("r")
    started: ChatStarted | None = None
    finished: ChatFinished | None = None
    deltas: list[str] = []
    for reply in client.send(LONG_PROMPT, request_id=request_id, max_tokens=LONG_MAX_TOKENS, recall=False):
        if isinstance(reply, ChatStarted):
            started = reply
        elif isinstance(reply, ChatDelta):
            if not deltas:
                client.cancel(request_id)  # generation is under way: stop it
            deltas.append(reply.text)
            assert len(deltas) < IGNORED_CANCEL_DELTAS, "chat keeps generating after CancelChat"
        elif isinstance(reply, ChatFinished):
            finished = reply
    assert started is not None and finished is not None
    turn = finished.turn
    assert turn.finish_reason == "cancelled", turn
    assert 1 <= turn.completion_tokens < LONG_MAX_TOKENS
    assert "".join(deltas) == turn.assistant_text  # the client saw every token generated
    logged = _turn_by_request(instance, request_id)
    assert logged is not None and logged["seq"] == finished.seq
    assert logged["body"]["finish_reason"] == "cancelled"
    assert logged["body"]["completion_tokens"] == turn.completion_tokens
    assert logged["body"]["assistant_text"] == turn.assistant_text
    # The session survives the cancel: its next turn follows on.
    _still_serving(instance, client, chat_pid, session_id=started.session_id, turn_index=started.turn_index + 1)


def test_client_disconnect_cancels_generation(instance: Instance, client: ChatClient) -> None:
    chat_pid = instance.pid("chat")
    ctx = zmq.Context()
    request_id = new_id("r")
    try:
        sock = connect_dealer(ctx, instance.paths.endpoint("chat.ctl"))
        sock.send(encode(SendMessage(request_id=request_id, message=LONG_PROMPT,
                                     max_tokens=LONG_MAX_TOKENS, recall=False)))
        while True:  # until the reply is streaming
            assert sock.poll(int(WAIT_S * 1000), zmq.POLLIN), "no reply from chat"
            reply = REPLY.decode(sock.recv())
            assert not isinstance(reply, ChatFinished), "the reply finished before we could hang up"
            if isinstance(reply, ChatDelta):
                break
        sock.close(linger=0)  # hang up mid-reply, like a killed client
    finally:
        ctx.destroy(linger=0)

    logged = wait_until(lambda: _turn_by_request(instance, request_id), WAIT_S, "the abandoned turn in the log")
    body = logged["body"]
    assert body["finish_reason"] == "cancelled", body
    assert 1 <= body["completion_tokens"] < LONG_MAX_TOKENS
    _still_serving(instance, client, chat_pid)


# ------------------------------------------------------------------ circ-chat on a terminal


def _reply_shown(term: Terminal) -> str:
    """The streamed reply: what appears between "bot> " and the next prompt."""
    term.expect(r"bot> ")
    start = term.pos
    prompt = term.expect(r"\nyou> ")
    return term.text[start:prompt.start()]


def test_repl_commands_multiline_input_and_streamed_replies(instance: Instance) -> None:
    first, second = _tag("Say hello."), _tag("Name a color.")
    backslash = (_tag("First line"), "second line")
    block = (_tag("Block one"), "block two")
    term = Terminal([str(CIRC_CHAT), "--max-tokens", str(SHORT_MAX_TOKENS), "--no-recall"], instance.env)
    try:
        term.expect(r"/help for commands")
        term.expect(r"you> ")
        term.type("/help")
        help_text = term.expect(r"(?s)Commands:.*?you> ").group(0)
        for command in ("/new", "/help", "/quit", '"""'):
            assert command in help_text, help_text

        term.type(first)
        shown = [_reply_shown(term)]
        term.type(backslash[0] + "\\")
        term.expect(r"\.\.\. ")  # the continuation prompt
        term.type(backslash[1])
        shown.append(_reply_shown(term))
        term.type('"""')
        for line in block:
            term.expect(r"\.\.\. ")
            term.type(line)
        term.expect(r"\.\.\. ")
        term.type('"""')
        shown.append(_reply_shown(term))

        term.type("/new")
        term.expect(r"\(new session\)")
        term.expect(r"you> ")
        term.type(second)
        shown.append(_reply_shown(term))

        term.type("/bogus")
        term.expect(r"unknown command /bogus; /help lists them")
        term.expect(r"you> ")
        term.type("/quit")
        assert term.wait() == 0, term.text[-2000:]
    finally:
        term.close()

    turns = [_turn_by_text(instance, text)["body"]
             for text in (first, "\n".join(backslash), "\n".join(block), second)]
    # Each reply streamed to the terminal is the logged assistant text.
    for text, turn in zip(shown, turns, strict=True):
        assert text.strip() == turn["assistant_text"].strip(), (text, turn["assistant_text"])
        assert turn["assistant_text"].strip()
        assert 1 <= turn["completion_tokens"] <= SHORT_MAX_TOKENS
    # Multi-line input arrives as one message; /new starts a fresh session.
    session = turns[0]["session_id"]
    assert [(t["session_id"], t["turn_index"]) for t in turns[:3]] == [(session, 0), (session, 1), (session, 2)]
    assert turns[3]["session_id"] != session and turns[3]["turn_index"] == 0
    # Readline kept the history, privately.
    history = instance.paths.state / "chat_history"
    assert first in history.read_text()
    assert history.stat().st_mode & 0o777 == 0o600


def test_ctrl_c_in_circ_chat_stops_the_streaming_reply(instance: Instance, client: ChatClient) -> None:
    chat_pid = instance.pid("chat")
    message = LONG_PROMPT
    after_seq = instance.events()[-1]["seq"]
    term = Terminal([str(CIRC_CHAT), "--max-tokens", str(LONG_MAX_TOKENS), "--no-recall"], instance.env)
    try:
        term.expect(r"you> ")
        term.type(message)
        term.expect(r"bot> ")
        start = term.pos
        term.expect(r"\S")  # the reply is streaming: text is on screen before the turn is done
        term.press(b"\x03")  # Ctrl-C: the terminal sends SIGINT to circ-chat
        stopping = term.expect(r" \[stopping\]")
        partial = term.text[start:stopping.start()].replace("^C", "")
        term.expect(r"you> ")  # the prompt is back: the next message can be typed
        term.type("/quit")
        assert term.wait() == 0, term.text[-2000:]
    finally:
        term.close()

    [body] = [e["body"] for e in instance.events(TURN_TYPE) if e["seq"] > after_seq and e["body"]["user_text"] == message]
    assert body["finish_reason"] == "cancelled", body
    assert 1 <= body["completion_tokens"] < LONG_MAX_TOKENS
    assert partial.strip(), "nothing was streamed before Ctrl-C"
    assert body["assistant_text"].strip().startswith(partial.strip()), (partial, body["assistant_text"])
    _still_serving(instance, client, chat_pid)


# ------------------------------------------------------------------ circ log tail -f, circ doctor


def _interruptible() -> None:
    """In the child before exec: SIGINT as a terminal's shell leaves it (see Terminal)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class LineReader:
    """Lines from a subprocess's stdout pipe, each waited for with a timeout."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.pending = b""

    def next_line(self, timeout_s: float = WAIT_S) -> str:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                raise AssertionError(f"no line within {timeout_s:g} s (have {self.pending!r})")
            data = os.read(self.fd, 65536)
            if not data:
                raise AssertionError(f"the output ended (have {self.pending!r})")
            self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()


def test_log_tail_follow_prints_a_new_event(instance: Instance) -> None:
    last_seq = instance.events()[-1]["seq"]
    proc = subprocess.Popen([str(CIRC), "log", "tail", "-f", "-n", "1"], cwd=REPO_ROOT, env=instance.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_interruptible)
    try:
        lines = LineReader(proc)
        first = lines.next_line()  # tail has read the log: it follows from here
        assert int(first.split()[0].lstrip("#")) >= last_seq, first
        message = _tag("Tail me")
        chat = instance.chat("--message", message, "--max-tokens", str(SHORT_MAX_TOKENS), "--no-recall")
        assert chat.returncode == 0, chat.stderr
        turn = _turn_by_text(instance, message)
        while True:  # other daemons may log events too; ours must come, in seq order
            line = lines.next_line()
            seq = int(line.split()[0].lstrip("#"))
            assert seq <= turn["seq"], f"passed seq {turn['seq']} without showing it: {line}"
            if seq == turn["seq"]:
                break
        assert TURN_TYPE in line and message in line, line
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends -f
        assert proc.wait(WAIT_S) == 0
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT_S)
        proc.stdout.close()
        proc.stderr.close()


def test_doctor_describes_the_running_instance(instance: Instance) -> None:
    chat_details = instance.wait_ready("chat").details
    pids = {name: instance.pid(name) for name in DAEMONS}

    result = instance.circ("doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"]["state"] == "ok"
    assert not any(problem.startswith("model:") for problem in report["problems"])
    assert Path(report["data"]["home"]).resolve() == instance.paths.home.resolve()
    assert report["data"]["events_db_exists"] is True and report["data"]["run_dir_mode"] == "0o700"
    # What doctor predicts is what the running chat does.
    assert report["mlx"]["backend"] == chat_details["backend"]
    assert report["compute"]["chosen"] == chat_details["weights"]
    assert report["blas"]["name"] == chat_details["blas"]
    assert report["blas"]["gflops_f32_512"] > 0
    for name, pid in pids.items():
        assert report["daemons"][name] == {"state": "RUNNING", "ready": True, "pid": pid}

    human = instance.circ("doctor")
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert [line.split()[0] for line in lines[:6]] == ["platform", "mlx", "blas", "compute", "model", "data"]
    assert f"backend {chat_details['backend']}" in lines[1]
    assert "GFLOP/s" in lines[2]
    assert lines[4].endswith(": ok")
    for name, pid in pids.items():
        assert any(re.fullmatch(rf"daemon\s+{name}\s+RUNNING, ready, pid {pid}", line) for line in lines), lines
    assert not any(line.startswith("PROBLEM   model") for line in lines)
