"""The scripted user: chat turns on one thread, everything else on another.

Chat turns go through :class:`ChatClient` (what `circ-chat` uses) with a few
tokens each; a failed turn is resent with the same ``request_id``, as a user
pressing enter again would, until it completes or ``TURN_DEADLINE_S`` passes.
A turn counts as completed only when the client got ``ChatFinished``.

The other thread runs the CLI as a user would: `circ recall`, `circ import`
of a fresh small JSON-lines file, `circ forget --match MARK --yes` of a marker
an earlier completed turn carried, and now and then `circ sleep --steps N`
when the trainer is idle. Imports and forgets are retried until they succeed
(both are idempotent: an import by the file's sha256, a forget by its match).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from protocol.envelope import new_id
from protocol.trainer_api import GetTrainerStatus, TrainerReply
from services.common.chat_client import ChatClient
from services.common.digest import bytes_sha256
from services.common.paths import REPO_ROOT, Paths
from services.common.rpc import RemoteError, RpcClient, ServiceUnavailable

CIRC = REPO_ROOT / "bin" / "circ"
TURNS_PER_SESSION = 5  # short sessions: a chat restart rebuilds a session from the log
TURN_DEADLINE_S = 180.0
CLI_TIMEOUT_S = 180.0
RETRY_DEADLINE_S = 180.0  # imports and forgets: give up after this long
# Codes after which resending the same request is the documented remedy.
RETRYABLE = {"unavailable", "busy", "cancelled", "internal"}
FORGET_EVERY = 6  # one turn in this many carries a marker a later forget names
FORGET_AFTER_S = 5.0  # forget a marker only this long after its turn completed (ingest has seen it)
SUBJECTS = ("cat's name", "sister's city", "gym locker", "dentist", "favourite band", "car", "coffee order",
            "piano teacher", "book club book", "team at work", "allotment plot", "home town")
VALUES = ("Miso", "Porto", "number 42", "Dr Okafor", "Radiohead", "a green Fiat", "flat white",
          "Mrs Lindqvist", "Middlemarch", "payments", "plot 7", "Ghent")
_IMPORTED = re.compile(r"imported (\d+) turns .*\(seq (\d+)\.\.(\d+)\)")
_FORGOT = re.compile(r"forgot (\d+) memories, erased (\d+) turn")


@dataclass
class Turn:
    request_id: str
    session_id: str
    text: str
    marker: str = ""
    attempts: int = 0
    seq: int = 0  # from ChatFinished: 0 until the client saw it complete
    assistant_text: str = ""
    completed_at: float = 0.0


@dataclass
class LoadTally:
    turns: dict[str, Turn] = field(default_factory=dict)  # request_id -> Turn, in order
    turn_errors: Counter[str] = field(default_factory=Counter)  # what the client was told, by kind
    gave_up: list[str] = field(default_factory=list)
    recalls: Counter[str] = field(default_factory=Counter)  # ok | failed
    imports: dict[str, int] = field(default_factory=dict)  # sha256[:24] -> turns (completed imports)
    import_failures: int = 0
    forgets: dict[str, int] = field(default_factory=dict)  # marker -> memories forgotten (completed)
    forget_failures: int = 0
    sleeps: Counter[str] = field(default_factory=Counter)  # accepted | already_running | failed
    op_failures: list[str] = field(default_factory=list)  # what a CLI call that failed for good said
    errors: list[str] = field(default_factory=list)  # bugs in the load itself

    @property
    def completed(self) -> list[Turn]:
        return [t for t in list(self.turns.values()) if t.seq]


class ChatLoad(threading.Thread):
    """Chat turns back to back, each resent with its request_id until it completes."""

    def __init__(self, paths: Paths, tally: LoadTally, stop: threading.Event, *, seed: int, max_tokens: int) -> None:
        super().__init__(name="chaos-chat", daemon=True)
        self.paths, self.tally, self.stop, self.seed, self.max_tokens = paths, tally, stop, seed, max_tokens
        self.rng = random.Random(seed + 11)

    def run(self) -> None:
        client = ChatClient(self.paths, max_wait_s=120.0)
        n = 0
        try:
            while not self.stop.is_set():
                self._one(client, self._turn(n))
                n += 1
        except Exception as exc:  # reported in the result, not lost in a thread
            self.tally.errors.append(f"chat load: {exc!r}")
        finally:
            client.close()

    def _turn(self, n: int) -> Turn:
        i = self.rng.randrange(len(SUBJECTS))
        nonce = f"{self.rng.getrandbits(32):08x}"
        marker = f"fgt{nonce}" if n % FORGET_EVERY == FORGET_EVERY - 1 else ""
        text = f"Please remember that my {SUBJECTS[i]} is {VALUES[i]} (note {marker or nonce})."
        turn = Turn(request_id=f"cx{self.seed:x}-{n:05d}", session_id=f"cx{self.seed:x}-s{n // TURNS_PER_SESSION}",
                    text=text, marker=marker)
        self.tally.turns[turn.request_id] = turn
        return turn

    def _one(self, client: ChatClient, turn: Turn) -> None:
        deadline = time.monotonic() + TURN_DEADLINE_S
        recall = self.rng.random() < 0.25  # some turns go through chat's recall of memories (ingest)
        while True:
            turn.attempts += 1
            try:
                final = client.complete(turn.text, session_id=turn.session_id, request_id=turn.request_id,
                                        max_tokens=self.max_tokens, recall=recall)
            except (ServiceUnavailable, RemoteError) as exc:
                code = exc.code if isinstance(exc, RemoteError) else "unreachable"
                self.tally.turn_errors[code] += 1
                if isinstance(exc, RemoteError) and code not in RETRYABLE:
                    self.tally.errors.append(f"turn {turn.request_id}: chat answered {code}: {exc}")
                    return
                client.close()
                if time.monotonic() > deadline or self.stop.wait(0.3):
                    if time.monotonic() > deadline:
                        self.tally.gave_up.append(turn.request_id)
                    return
                continue
            if final.request_id != turn.request_id:
                self.tally.errors.append(f"turn {turn.request_id}: ChatFinished for {final.request_id}")
                return
            turn.seq, turn.assistant_text, turn.completed_at = final.seq, final.turn.assistant_text, time.monotonic()
            return


class OpsLoad(threading.Thread):
    """Recalls, imports, forgets and sleeps through the CLI, one every few seconds."""

    def __init__(self, paths: Paths, env: dict[str, str], tally: LoadTally, stop: threading.Event, *, seed: int,
                 sleep_steps: int, sleep_gap_s: float, interval_s: tuple[float, float]) -> None:
        super().__init__(name="chaos-ops", daemon=True)
        self.paths, self.env, self.tally, self.stop = paths, env, tally, stop
        self.sleep_steps, self.sleep_gap_s, self.interval_s = sleep_steps, sleep_gap_s, interval_s
        self.rng = random.Random(seed + 23)
        self.imports_dir = paths.home / "chaos-imports"
        self.imports_dir.mkdir(exist_ok=True)
        self.last_sleep = time.monotonic() - sleep_gap_s / 2  # the first sleep comes after some turns
        self.forgotten: set[str] = set()
        self.n_imports = 0

    def run(self) -> None:
        # Each kind once first, so that even a short run does every kind; then at random.
        first = ["import", "sleep", "recall", "forget"]
        try:
            while not self.stop.wait(self.rng.uniform(*self.interval_s)):
                op = first.pop(0) if first else self.rng.choices(("recall", "import", "forget", "sleep"),
                                                                 weights=(3, 2, 2, 1))[0]
                if op == "sleep" and (time.monotonic() - self.last_sleep >= self.sleep_gap_s or not self.tally.sleeps):
                    self.sleep()
                elif op == "import":
                    self.import_()
                elif op == "forget":
                    self.forget()
                else:
                    self.recall()
        except Exception as exc:  # reported in the result, not lost in a thread
            self.tally.errors.append(f"ops load: {exc!r}")

    def circ(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([str(CIRC), *args], env=self.env, cwd=REPO_ROOT, capture_output=True, text=True,
                                  timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(exc.cmd, 124, "", f"timed out after {CLI_TIMEOUT_S:g} s")

    def _until_ok(self, *args: str) -> subprocess.CompletedProcess[str] | None:
        """Run until exit 0 (a daemon it needs may be restarting), or None after RETRY_DEADLINE_S."""
        deadline = time.monotonic() + RETRY_DEADLINE_S
        while True:  # also after the stop: an operation the user started is seen through
            result = self.circ(*args)
            if result.returncode == 0:
                return result
            if time.monotonic() > deadline:
                said = (result.stderr or result.stdout).strip()[-300:]
                self.tally.op_failures.append(f"circ {' '.join(args)} (exit {result.returncode}): {said}")
                return None
            time.sleep(0.5)

    def recall(self) -> None:
        result = self.circ("recall", self.rng.choice(SUBJECTS), "--k", "3", "--json")
        ok = result.returncode == 0
        if not ok:  # expected while ingest restarts; kept to tell that apart from anything else
            self.tally.op_failures.append(f"circ recall (exit {result.returncode}): "
                                          f"{(result.stderr or result.stdout).strip()[-200:]}")
        else:
            try:
                json.loads(result.stdout)
            except ValueError:
                self.tally.errors.append(f"circ recall printed no JSON: {result.stdout[:200]!r}")
        self.tally.recalls["ok" if ok else "failed"] += 1

    def import_(self) -> None:
        self.n_imports += 1
        nonce = f"{self.rng.getrandbits(40):010x}"
        lines = []
        for c in range(2):
            i = self.rng.randrange(len(SUBJECTS))
            lines.append(json.dumps({"messages": [
                {"role": "user", "content": f"My {SUBJECTS[i]} is {VALUES[i]} (imported {nonce}-{c})."},
                {"role": "assistant", "content": "Noted."},
                {"role": "user", "content": f"And my {SUBJECTS[(i + 1) % len(SUBJECTS)]}? ({nonce}-{c}b)"},
                {"role": "assistant", "content": "I'll remember."}]}))
        data = ("\n".join(lines) + "\n").encode()
        path = self.imports_dir / f"imp-{self.n_imports:04d}.jsonl"
        path.write_bytes(data)
        result = self._until_ok("import", str(path))
        if result is None:
            self.tally.import_failures += 1
            return
        match = _IMPORTED.search(result.stdout)
        if not match:
            self.tally.errors.append(f"circ import said {result.stdout.strip()!r}")
            return
        self.tally.imports[bytes_sha256(data)[:24]] = int(match.group(1))

    def forget(self) -> None:
        now = time.monotonic()
        ready = [t.marker for t in self.tally.completed
                 if t.marker and t.marker not in self.forgotten and now - t.completed_at >= FORGET_AFTER_S]
        if not ready:
            return self.recall()
        marker = self.rng.choice(ready)
        self.forgotten.add(marker)
        result = self._until_ok("forget", "--match", marker, "--yes")
        if result is None:
            self.tally.forget_failures += 1
            return
        match = _FORGOT.search(result.stdout)
        # "nothing to forget": ingest skipped that turn (e.g. as a near duplicate).
        self.tally.forgets[marker] = int(match.group(1)) if match else 0
        return None

    def sleep(self) -> None:
        if not self._trainer_idle():
            return
        self.last_sleep = time.monotonic()
        result = self.circ("sleep", "--steps", str(self.sleep_steps))
        kind = {0: "accepted", 4: "already_running"}.get(result.returncode, "failed")
        self.tally.sleeps[kind] += 1

    def _trainer_idle(self) -> bool:
        client = RpcClient(self.paths, "trainer", "trainer.ctl", TrainerReply, timeout_s=5.0)
        try:
            status: Any = client.request(GetTrainerStatus(request_id=new_id("st")))
            return getattr(status, "state", "") == "idle"
        except (ServiceUnavailable, RemoteError):
            return False
        finally:
            client.close()

