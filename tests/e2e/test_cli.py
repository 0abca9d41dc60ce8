"""The command line a user types, against the real daemons under supervisord.

`circ status`, `circ-chat` (one-shot, stdin, --json, --session across a
chat restart), `circ log` (tail, export, stats, verify), and what a user
should be able to rely on: a private run directory, nothing on TCP, a clean
stop with exit code 0, and a fast, helpful failure when nothing runs.

Tests in this module run in file order on one instance; the last one stops it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import time
import uuid
from pathlib import Path

import pytest

from .harness import ALL_DAEMONS, TURN_TYPE, Instance, parse_json_lines, pid_alive, wait_until

pytestmark = pytest.mark.e2e

MAX_TOKENS = "8"
DOWN_CHAT_LIMIT_S = 5.0


def _unique(text: str) -> str:
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def _turn_for(instance: Instance, user_text: str) -> dict:
    turns = [e for e in instance.events(TURN_TYPE) if e["body"]["user_text"] == user_text]
    assert len(turns) == 1, f"expected one logged turn for {user_text!r}, found {len(turns)}"
    return turns[0]


def _chat_json(instance: Instance, *args: str) -> dict:
    result = instance.chat(*args, "--json", "--max-tokens", MAX_TOKENS)
    assert result.returncode == 0, result.stderr
    lines = parse_json_lines(result.stdout)
    assert len(lines) == 1, result.stdout
    return lines[0]


def test_status_json_shows_both_daemons_running_and_ready(instance: Instance) -> None:
    """`circ status --json`: supervisord up, each daemon RUNNING, ready, pid, uptime; the last event."""
    result = instance.circ("status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["supervisord"] is True
    assert Path(report["home"]) == instance.home.resolve()
    assert set(ALL_DAEMONS) <= set(report["daemons"])
    procs = instance.procs()
    for name in ALL_DAEMONS:
        daemon = report["daemons"][name]
        assert daemon["state"] == "RUNNING"
        assert daemon["ready"] is True
        assert isinstance(daemon["pid"], int) and daemon["pid"] == procs[name].pid
        assert isinstance(daemon["uptime_s"], (int, float)) and daemon["uptime_s"] >= 0
        assert isinstance(daemon["details"], dict)
    last = report["last_event"]
    assert set(last) >= {"seq", "type", "ts", "source"}
    assert last["seq"] == instance.events()[-1]["seq"]
    assert abs(time.time() - last["ts"]) < 3600


def test_status_human_readable(instance: Instance) -> None:
    result = instance.circ("status")
    assert result.returncode == 0, result.stderr
    for name in ALL_DAEMONS:
        assert re.search(rf"{name}\s+RUNNING\s+pid \d+.*\bready\b", result.stdout), result.stdout
    assert "last event: #" in result.stdout


def test_chat_message_prints_the_reply(instance: Instance) -> None:
    """`circ-chat --message TEXT` prints the reply (the logged assistant text) and exits 0."""
    message = _unique("Say hello.")
    result = instance.chat("--message", message, "--max-tokens", MAX_TOKENS)
    assert result.returncode == 0, result.stderr
    turn = _turn_for(instance, message)
    assert result.stdout.strip() == turn["body"]["assistant_text"].strip()
    assert result.stdout.strip()


def test_chat_message_dash_reads_stdin(instance: Instance) -> None:
    """`--message -` takes the message from stdin, multi-line included."""
    message = _unique("First line from stdin.\nSecond line.")
    result = instance.chat("--message", "-", "--max-tokens", MAX_TOKENS, input=message)
    assert result.returncode == 0, result.stderr
    turn = _turn_for(instance, message)
    assert result.stdout.strip() == turn["body"]["assistant_text"].strip()


def test_chat_json_prints_the_turn_record_with_seq(instance: Instance) -> None:
    """`--json` prints the logged turn record: the event body plus its seq."""
    message = _unique("What is two plus two?")
    record = _chat_json(instance, "--message", message)
    logged = _turn_for(instance, message)
    assert record["seq"] == logged["seq"]
    assert record["duplicate"] is False
    assert record["turn_index"] == 0
    body = logged["body"]
    for key in ("session_id", "turn_index", "user_text", "assistant_text", "request_id", "model",
                "completion_tokens", "finish_reason"):
        assert record[key] == body[key], key
    assert logged["event_id"] == f"turn-{record['request_id']}"
    assert 1 <= record["completion_tokens"] <= int(MAX_TOKENS)


def test_session_continues_and_survives_a_chat_restart(instance: Instance) -> None:
    """`--session ID` continues a conversation; after kill -9 of chat, history comes back from the log."""
    # No recalled memories in the prompt: its length then measures the history alone.
    first = _chat_json(instance, "--no-recall", "--message", _unique("My cat is called Tom."))
    session = first["session_id"]
    second = _chat_json(instance, "--no-recall", "--session", session,
                        "--message", _unique("What is my cat called?"))
    assert (second["session_id"], second["turn_index"]) == (session, 1)
    assert second["prompt_tokens"] > first["prompt_tokens"]  # the first turn is in the prompt

    old_pid = instance.pid("chat")
    os.kill(old_pid, signal.SIGKILL)
    new_pid = instance.wait_running("chat", not_pid=old_pid, timeout_s=60)
    pong = instance.wait_ready("chat", timeout_s=120)
    assert pong.pid == new_pid

    third = _chat_json(instance, "--no-recall", "--session", session, "--message", _unique("And again?"))
    assert (third["session_id"], third["turn_index"]) == (session, 2)
    # The restarted chat rebuilt both earlier turns into the prompt.
    assert third["prompt_tokens"] > second["prompt_tokens"]
    indices = [e["body"]["turn_index"] for e in instance.events(TURN_TYPE) if e["body"]["session_id"] == session]
    assert indices == [0, 1, 2]


def test_run_directory_is_private(instance: Instance) -> None:
    mode = stat.S_IMODE(instance.paths.run.stat().st_mode)
    assert mode == 0o700, oct(mode)
    sockets = sorted(p.name for p in instance.paths.run.glob("*.sock"))
    assert {"events.ctl.sock", "events.in.sock", "events.pub.sock", "chat.ctl.sock",
            "supervisor.sock"} <= set(sockets)


def _listening_tcp_inodes() -> dict[str, str]:
    """Inode -> local address (hex, as /proc/net/tcp writes it) of every listening TCP socket."""
    inodes: dict[str, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                inodes[fields[9]] = fields[1]
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed while we looked
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def test_nothing_listens_on_tcp(instance: Instance) -> None:
    """No daemon (nor supervisord) owns a listening TCP socket: ipc only. The one exception is
    the OpenAI-compatible api, and it listens on loopback only (127.0.0.1, by default)."""
    pids = {name: instance.pid(name) for name in ALL_DAEMONS}
    pids["supervisord"] = int((instance.paths.run / "supervisord.pid").read_text())
    listening = _listening_tcp_inodes()
    for name, pid in pids.items():
        owned = _socket_inodes(pid)
        assert owned, f"{name} (pid {pid}) has no sockets at all: the check would prove nothing"
        listens = {listening[i] for i in owned if i in listening}
        if name == "api":
            # 0100007F = 127.0.0.1 in /proc/net/tcp's little-endian hex.
            assert listens and all(a.startswith("0100007F:") for a in listens), f"api listens on {listens}"
        else:
            assert not listens, f"{name} (pid {pid}) listens on TCP ({listens})"


def test_log_tail(instance: Instance) -> None:
    result = instance.circ("log", "tail", "-n", "50")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("#1 ")
    assert any("service.started" in line and "eventlog" in line for line in lines)
    assert any(TURN_TYPE in line for line in lines)
    assert len(lines) == min(50, len(instance.events()))


def test_log_export_by_type(instance: Instance) -> None:
    result = instance.circ("log", "export", "--type", TURN_TYPE)
    assert result.returncode == 0, result.stderr
    records = parse_json_lines(result.stdout)
    logged = instance.events(TURN_TYPE)
    assert [r["seq"] for r in records] == [e["seq"] for e in logged]
    assert all(r["type"] == TURN_TYPE and r["body"]["type"] == TURN_TYPE for r in records)
    assert [r["body"]["request_id"] for r in records] == [e["body"]["request_id"] for e in logged]
    # --since pages by seq.
    since = records[1]["seq"]
    later = parse_json_lines(instance.circ("log", "export", "--type", TURN_TYPE, "--since", str(since)).stdout)
    assert [r["seq"] for r in later] == [r["seq"] for r in records if r["seq"] > since]


def test_log_stats(instance: Instance) -> None:
    events = instance.events()
    result = instance.circ("log", "stats", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["count"] == stats["head_seq"] == len(events)
    assert stats["by_type"][TURN_TYPE] == len(instance.events(TURN_TYPE))
    assert stats["db_bytes"] > 0
    human = instance.circ("log", "stats")
    assert human.returncode == 0 and f"{len(events)} events" in human.stdout


def test_log_verify(instance: Instance) -> None:
    result = instance.circ("log", "verify")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:") and "without gaps" in result.stdout


def test_down_stops_cleanly_and_chat_then_fails_fast(instance: Instance) -> None:
    """`circ down`: SIGTERM, each daemon exits 0 and says so; then circ-chat fails fast, naming `circ up`."""
    pids = {name: instance.pid(name) for name in ALL_DAEMONS}
    result = instance.down()
    assert result.returncode == 0, result.stderr
    assert "stopped" in result.stderr
    supervisord_log = (instance.paths.logs / "supervisord.log").read_text()
    for name in ALL_DAEMONS:
        assert f"stopped: {name} (exit status 0)" in supervisord_log, supervisord_log[-2000:]
        wait_until(lambda pid=pids[name]: not pid_alive(pid), 10, f"{name} (pid {pids[name]}) gone")
        assert f'"event": "{name}.stopped"' in (instance.paths.logs / f"{name}.log").read_text()

    status = instance.circ("status", "--json")
    assert status.returncode != 0
    report = json.loads(status.stdout)
    assert report["supervisord"] is False
    assert all(d["state"] == "STOPPED" and not d["ready"] for d in report["daemons"].values())

    # The socket files may still be there: the client must not hang on them.
    started = time.monotonic()
    chat = instance.chat("--message", "hello?", timeout_s=30)
    elapsed = time.monotonic() - started
    assert chat.returncode != 0
    assert "circ up" in chat.stderr, chat.stderr
    assert elapsed < DOWN_CHAT_LIMIT_S, f"circ-chat took {elapsed:.1f} s to notice"

    # The log is still readable and intact with nothing running.
    verify = instance.circ("log", "verify")
    assert verify.returncode == 0, verify.stderr


def test_chat_fails_fast_when_never_started(fresh_home: Instance) -> None:
    """With no daemons (and no run directory yet), circ-chat exits non-zero within 5 s naming `circ up`."""
    started = time.monotonic()
    result = fresh_home.chat("--message", "hello?", timeout_s=30)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "circ up" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert elapsed < DOWN_CHAT_LIMIT_S, f"circ-chat took {elapsed:.1f} s to notice"
