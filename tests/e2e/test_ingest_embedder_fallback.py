"""ingest's fallback embedder and the index rebuild when the embedder changes, with real daemons.

1. MiniLM broken (its package shadowed by an empty model directory): ingest
   comes up ready on the chat model's hidden states, says so (Ping, the
   ``service.started`` event, `circ doctor`), files and recalls memories, and
   chat recalls through it. The index records the chat-model embedder.
2. MiniLM back, ingest restarted: the index on disk was built by the other
   embedder, so ingest rebuilds it from the log up to its cursor (no decision
   logged twice), swaps it in and recalls the same facts with MiniLM.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from services.cli.chat_client import ChatClient
from services.lib.memory.index import read_meta

from .harness import Instance, base_env
from .test_ingest_bad_input import _broken_embedder_path, _decisions, _recall_texts, _wait_handled

pytestmark = pytest.mark.e2e

MINILM = "minilm:all-MiniLM-L6-v2"


def _word(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _chat(instance: Instance, text: str, session: str | None = None):  # noqa: ANN202
    client = ChatClient(instance.paths, max_wait_s=180)
    try:
        return client.complete(text, max_tokens=2, **({"session_id": session} if session else {}))
    finally:
        client.close()


@pytest.mark.timeout(1500)
def test_fallback_embedder_then_a_rebuild_when_minilm_comes_back(fresh_home: Instance) -> None:
    shadow = fresh_home.home / "shadow"
    model_dir, real_model = _broken_embedder_path(shadow)
    # A generous recall budget: this test checks what chat recalls, not how fast. (The fallback
    # embeds a query in ~150 ms on an idle 2-core CPU, MiniLM in ~12 ms: bench/bench_retrieval.py;
    # chat's default budget, 400 ms, can run out on a loaded machine, and chat then answers without.)
    env = base_env(fresh_home.home, PYTHONPATH=str(shadow), CIRCADIAN_CHAT_RECALL_TIMEOUT_MS="10000")
    env.pop("CIRCADIAN_EMBEDDER", None)  # auto: MiniLM, else the chat model
    inst = Instance(fresh_home.home, env)
    fresh_home.env = env

    # The first start may train the router on the chat model's vectors (cached afterwards).
    up = inst.circ("up", "--timeout", "900", timeout_s=960)
    fresh_home._remember_pids()
    assert up.returncode == 0, f"{up.stderr}\n{inst.logs()}"

    # -- 1. on the fallback -----------------------------------------------------------
    pong = inst.wait_ready("ingest")
    details = pong.details
    assert details["embedder"] == "chat-model", details
    assert details["embedder_identity"].startswith("chat-model:smollm2-135m-instruct@")
    assert details["embedder_dim"] == "576"
    assert str(model_dir) in details["embedder_fallback_reason"] and "bin/setup" in details["embedder_fallback_reason"]
    started = [e["body"] for e in inst.events("service.started") if e["body"]["service"] == "ingest"]
    assert started[-1]["details"]["embedder"] == "chat-model"
    assert "ingest.embedder_fallback" in (inst.paths.logs / "ingest.log").read_text(errors="replace")
    assert not inst.events("memory.failed"), "a fallback is not a failure"

    doctor = inst.circ("doctor", "--json", "--no-probe", timeout_s=120)
    assert doctor.returncode == 0, doctor.stderr
    embedder = json.loads(doctor.stdout)["embedder"]
    assert embedder["using"] == "chat-model" and embedder["source"] == "ingest"
    assert "bin/setup" in embedder["fix"] and "restart ingest" in embedder["fix"]
    human = inst.circ("doctor", "--no-probe", timeout_s=120)
    assert any(line.startswith("embedder  chat-model: the chat model smollm2-135m-instruct (fallback")
               for line in human.stdout.splitlines()), human.stdout

    city, pet = _word("Vellamo"), _word("Quillon")
    told = [_chat(inst, f"Please remember that my grandmother lives in {city}."),
            _chat(inst, f"My hamster is called {pet} and he loves sunflower seeds.")]
    _wait_handled(inst, told[-1].seq)
    decisions = _decisions(inst)
    assert all(decisions[t.seq]["type"] == "memory.stored" for t in told), [decisions[t.seq] for t in told]
    assert any(city in text for text in _recall_texts(inst, "where does my grandmother live?"))
    assert any(pet in text for text in _recall_texts(inst, "what is my hamster called?"))
    asked = _chat(inst, "Where does my grandmother live?", session=f"new-{uuid.uuid4().hex[:6]}")
    assert asked.turn.recall_status == "ok" and asked.turn.recalled_ids, asked.turn
    _wait_handled(inst, asked.seq)
    meta = read_meta(inst.paths.memory)
    assert meta["index.embedder"] == details["embedder_identity"] and meta["index.dim"] == "576"
    cursor = int(meta["cursor_seq"])
    decided_before = {seq: e["event_id"] for seq, e in _decisions(inst).items()}

    # -- 2. MiniLM is back: restart ingest; it rebuilds the index for MiniLM -----------
    for name in ("config.json", "tokenizer.json", "model.safetensors", "vocab.txt"):
        if (real_model / name).exists():
            (model_dir / name).symlink_to(real_model / name)
    inst.supervisor.stop_process("ingest")
    inst.supervisor.start_process("ingest")
    fresh_home._remember_pids()
    pong = inst.wait_ready("ingest", timeout_s=300)
    details = pong.details
    assert details["embedder"] == "minilm" and details["embedder_identity"] == MINILM, details
    assert "rebuilt from the log" in details["index"] and "was chat-model:" in details["index"], details
    meta = read_meta(inst.paths.memory)
    assert meta["index.embedder"] == MINILM and meta["index.dim"] == "384"
    # Ingest consumed more of the log (its own decision events, the stop) after the earlier read,
    # so the cursor may have moved on; it never moves back, and nothing is decided twice (below).
    assert int(meta["cursor_seq"]) >= cursor
    assert not [p.name for p in Path(inst.paths.data).iterdir() if p.name.startswith("memory.")], \
        "a rebuild directory or an old index was left behind"
    assert any(city in text for text in _recall_texts(inst, "where does my grandmother live?"))
    assert any(pet in text for text in _recall_texts(inst, "what is my hamster called?"))
    # The rebuild logged no decision again; turns after it are decided once, by MiniLM.
    assert {seq: e["event_id"] for seq, e in _decisions(inst).items()} == decided_before
    later = _chat(inst, f"My neighbour's name is {_word('Ostrava')} and she plays the cello.")
    _wait_handled(inst, later.seq)
    assert _decisions(inst)[later.seq]["type"] == "memory.stored"
    assert json.loads(inst.circ("doctor", "--json", "--no-probe", timeout_s=120).stdout)["embedder"]["using"] \
        == "minilm"
