"""A scratch circadian, driven as a user would: `circ up`, chat turns, `circ sleep`.

Everything goes through the real daemons and sockets in a private
``CIRCADIAN_HOME``: turns are chatted through the chat daemon and logged,
ingest redacts/routes/embeds them, the trainer sleeps and the evaluator
judges. The benchmark process only reads (memories, events) and asks ingest
for recall.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from protocol.envelope import new_id
from protocol.ingest_api import GetMemoryStats, IngestReply, MemoryStats, Recall, Recalled
from protocol.trainer_api import StartSleep, TrainerReply
from services.cli.chat_client import ChatClient
from services.common.paths import REPO_ROOT, current_paths
from services.common.rpc import RpcClient

CIRC = REPO_ROOT / "bin" / "circ"
UP_TIMEOUT_S = 300.0
TURNS_PER_SESSION = 8  # a new chat session every few turns keeps prompts short, as real days do
INGEST_TIMEOUT_S = 900.0
SLEEP_TIMEOUT_S = 7200.0
_FOREIGN_ENV = ("CIRCADIAN_HOME", "CIRCADIAN_RUN", "CIRCADIAN_CONFIG")


class SystemError_(RuntimeError):
    """The scratch system did not do what was asked (with what to look at)."""


class ScratchSystem:
    def __init__(self, home: Path | None = None, *, keep: bool = False, env: dict[str, str] | None = None) -> None:
        self.home = home or Path(tempfile.mkdtemp(prefix="cb-", dir="/tmp"))  # short: socket paths
        self.keep = keep
        self.env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
        # Any free API port: a scratch system never fights a running instance over 8642.
        self.env.update({"CIRCADIAN_HOME": str(self.home), "CIRCADIAN_TRAINER_WINDOW": "", "CIRCADIAN_API_PORT": "0",
                         **(env or {})})
        os.environ.update({"CIRCADIAN_HOME": str(self.home)})
        for key in ("CIRCADIAN_RUN", "CIRCADIAN_CONFIG"):
            os.environ.pop(key, None)
        self.paths = current_paths()
        self._chat: ChatClient | None = None

    # -- lifecycle ------------------------------------------------------------
    def circ(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CIRC), *args], env=self.env, capture_output=True, text=True, timeout=timeout_s)

    def up(self) -> None:
        result = self.circ("up", "--timeout", str(int(UP_TIMEOUT_S - 20)), timeout_s=UP_TIMEOUT_S)
        if result.returncode != 0:
            raise SystemError_(f"`circ up` failed in {self.home}:\n{result.stderr.strip()}")

    def down(self) -> None:
        if self._chat is not None:
            self._chat.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.circ("down", timeout_s=120.0)
        if not self.keep:
            import shutil

            shutil.rmtree(self.home, ignore_errors=True)

    # -- the day ------------------------------------------------------------------
    def chat_day(self, turns: list[str], *, max_tokens: int, progress: Any = None) -> dict[str, int]:
        """Chat every turn (recall off: the day is being told, not asked); turn text -> seq."""
        if self._chat is None:
            self._chat = ChatClient(self.paths, max_wait_s=300.0)
        seqs: dict[str, int] = {}
        session = None
        for i, text in enumerate(turns):
            if i % TURNS_PER_SESSION == 0:
                session = None
            finished = self._chat.complete(text, session_id=session, max_tokens=max_tokens, recall=False)
            session = finished.turn.session_id
            seqs[text] = finished.seq
            if progress and (i + 1) % 10 == 0:
                progress(f"chatted {i + 1}/{len(turns)} turns")
        return seqs

    def wait_ingested(self, seq: int) -> MemoryStats:
        """Until ingest has handled every event up to ``seq``."""
        deadline = time.monotonic() + INGEST_TIMEOUT_S
        client = RpcClient(self.paths, "ingest", "ingest.ctl", IngestReply, timeout_s=10.0)
        try:
            while True:
                stats = client.request(GetMemoryStats(request_id=new_id("b")))
                if stats.cursor_seq >= seq:
                    return stats
                if time.monotonic() > deadline:
                    raise SystemError_(f"ingest handled only up to seq {stats.cursor_seq} of {seq} "
                                       f"within {INGEST_TIMEOUT_S:g} s; see {self.paths.logs}/ingest.log")
                time.sleep(0.5)
        finally:
            client.close()

    # -- the night ------------------------------------------------------------------
    def sleep(self, progress_to_stderr: bool = True) -> dict[str, Any]:
        """`circ sleep --wait`, through the trainer daemon's socket; the summary it prints."""
        from services.cli.cmd_night import _head_seq, follow

        start_seq = _head_seq(self.paths)
        started = time.time()
        client = RpcClient(self.paths, "trainer", "trainer.ctl", TrainerReply, timeout_s=30.0)
        try:
            accepted = client.request(StartSleep(request_id=new_id("s")))
        finally:
            client.close()
        summary: dict[str, Any] = {"sleep_id": accepted.sleep_id, "adapter_id": accepted.adapter_id}
        with contextlib.redirect_stdout(sys.stderr):
            summary.update(follow(self.paths, accepted.sleep_id, accepted.adapter_id, start_seq,
                                  SLEEP_TIMEOUT_S, quiet=not progress_to_stderr))
        adapter_dir = self.paths.adapters / accepted.adapter_id
        summary["adapter_dir"] = str(adapter_dir) if (adapter_dir / "adapters.safetensors").is_file() else None
        summary.update(self._training_figures(adapter_dir))
        summary["stages_s"] = self._stages(start_seq, accepted.sleep_id, accepted.adapter_id, started)
        return summary

    def _stages(self, after_seq: int, sleep_id: str, adapter_id: str, started: float) -> dict[str, float]:
        """Wall time of each stage of the sleep, from its events' timestamps."""
        marks = {"training.started": "dataset", "training.finished": "training", "evaluation.completed": "evaluation",
                 "adapter.promoted": "verdict", "adapter.rejected": "verdict"}
        times = {}
        for event in self.events(tuple(marks), after_seq):
            body = event["body"]
            if body.get("sleep_id") == sleep_id or body.get("adapter_id") == adapter_id:
                times.setdefault(marks[event["type"]], event["ts"])
        out, previous = {}, started
        for stage in ("dataset", "training", "evaluation", "verdict"):
            if stage in times:
                out[stage] = round(times[stage] - previous, 1)
                previous = times[stage]
        out["total"] = round(previous - started, 1)
        return out

    def _training_figures(self, adapter_dir: Path) -> dict[str, Any]:
        """Steps, tokens/s and stage times of the night from the log and the adapter."""
        out: dict[str, Any] = {}
        try:
            manifest = json.loads((adapter_dir / "manifest.json").read_text())
            out["train"] = {k: manifest.get("train", {}).get(k) for k in ("steps", "lr", "rank", "scale")}
            run = manifest.get("steps") or {}  # the stop rule: steps planned / run / why it stopped
            if run:
                out["train"].update(steps=run.get("run"), steps_planned=run.get("planned"),
                                    stopped_because=run.get("stopped_because"))
        except (OSError, ValueError):
            pass
        return out

    # -- reading ------------------------------------------------------------------
    def events(self, types: tuple[str, ...], after_seq: int = 0) -> list[dict[str, Any]]:
        conn = sqlite3.connect(f"file:{self.paths.events_db}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute("SELECT seq, type, body, ts FROM events WHERE seq > ? ORDER BY seq",
                                (after_seq,)).fetchall()
        finally:
            conn.close()
        out = []
        for seq, kind, body, ts in rows:
            if kind in types:
                out.append({"seq": seq, "type": kind, "ts": ts, "body": msgspec.msgpack.decode(body)})
        return out

    def recaller(self, k: int, min_score: float):  # noqa: ANN201
        client = RpcClient(self.paths, "ingest", "ingest.ctl", IngestReply, timeout_s=30.0)

        def recall(query: str) -> list[tuple[int, str]]:
            reply = client.request(Recall(query=query, k=k, min_score=min_score, request_id=new_id("q")))
            if not isinstance(reply, Recalled):
                raise SystemError_(f"ingest answered recall with {type(reply).__name__}")
            return [(m.turn_seq, m.text) for m in reply.memories]

        return recall
