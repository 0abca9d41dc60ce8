"""Canary secrets through the whole pipeline: only the raw event log may hold them.

Unique secrets of five kinds (an ``sk-`` API key, an e-mail address, a
Luhn-valid card number, a checksum-valid IBAN, a phone number), fresh each
run, are planted through the four ways text comes in: chat turns
(`circ-chat -m`), an imported conversation file (`circ import`), a file
dropped into the inbox, and the OpenAI-compatible API. Ingest decides every turn, then a night runs
(`circ sleep --wait --steps 2`: dataset, training, judging). Then every file
under CIRCADIAN_HOME is read byte-wise (the memory index and its SQLite
files, datasets, adapters including their safetensors, reports, the inbox,
the daemons' own logs in data/logs/) and searched for every secret.

- Default config: the raw event log (``events.db`` and its ``-wal``/``-shm``)
  is the user's own record and the one place allowed to hold them (and the
  inbox file itself, archived as dropped under ``data/inbox/imported/``).
- ``CIRCADIAN_CHAT_REDACT_BEFORE_LOG=true`` (``chat.redact_before_log``):
  not even the log may, nor an archived inbox file (it is removed once imported).
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from services.cli.daemons import ping
from services.lib.privacy.redact import iban_checksum_ok, luhn_ok

from .harness import TURN_TYPE, Instance, base_env, make_home, remove_home, wait_until

pytestmark = pytest.mark.e2e

STEPS = 2
RAW_LOG = ("events.db", "events.db-wal", "events.db-shm", "events.db-journal")
MAX_SCAN_BYTES = 300_000_000  # anything bigger under the home would be a surprise worth failing on


# -- canaries ------------------------------------------------------------------------
def _card(rng: random.Random) -> str:
    digits = [4, 5, 3, 9] + [rng.randrange(10) for _ in range(11)]
    for check in range(10):
        if luhn_ok("".join(map(str, digits + [check]))):
            break
    number = "".join(map(str, digits + [check]))
    return " ".join(number[i:i + 4] for i in range(0, 16, 4))


def _iban(rng: random.Random) -> str:
    bban = "".join(str(rng.randrange(10)) for _ in range(18))
    for check in range(2, 99):
        iban = f"DE{check:02d}{bban}"
        if iban_checksum_ok(iban):
            return iban
    raise AssertionError("no IBAN check digits found")


def canaries(channel: str) -> dict[str, str]:
    """Five fresh secrets for one channel (chat, import, api); distinct across channels and runs."""
    rng = random.Random(secrets.randbits(64))
    token = secrets.token_hex(6)
    return {
        "api_key": f"sk-proj-{secrets.token_hex(4)}{channel}{secrets.token_hex(16)}",
        "email": f"canary.{channel}.{token}@example.org",
        "card": _card(rng),
        "iban": _iban(rng),
        "phone": f"+44 7{rng.randrange(100, 999)} {rng.randrange(100000, 999999)}",
    }


def _needles(secret: str) -> set[bytes]:
    """The secret as written and, for numbers, without its spaces (a normaliser might strip them)."""
    forms = {secret, secret.replace(" ", "")}
    return {f.encode() for f in forms} | {f.encode("utf-16-le") for f in forms}


def _sentences(c: dict[str, str]) -> list[str]:
    return [f"My API key is {c['api_key']} and my e-mail is {c['email']}, please remember both.",
            f"My card number is {c['card']}, my IBAN is {c['iban']} and my phone number is {c['phone']}."]


# -- the instance ----------------------------------------------------------------------
def _env(home: Path, redact_before_log: bool) -> dict[str, str]:
    env = {k: v for k, v in base_env(home).items()
           if not k.startswith(("CIRCADIAN_TRAINER_", "CIRCADIAN_EVALUATOR_"))}
    env["CIRCADIAN_TRAINER_WINDOW"] = ""  # no scheduled night behind the test's back
    env["CIRCADIAN_CHAT_REDACT_BEFORE_LOG"] = "true" if redact_before_log else "false"
    return env


@pytest.fixture(params=[False, True], ids=["raw_log", "redact_before_log"])
def canary_home(request: pytest.FixtureRequest) -> Iterator[tuple[Instance, bool]]:
    home = make_home()
    inst = Instance(home, _env(home, request.param))
    try:
        inst.up()
        for name in ("ingest", "trainer", "evaluator", "api"):
            inst.wait_ready(name, timeout_s=60)
        yield inst, request.param
    finally:
        inst.teardown()
        remove_home(home)


def _plant(inst: Instance, tmp_path: Path) -> dict[str, dict[str, str]]:
    planted = {channel: canaries(channel) for channel in ("chat", "import", "inbox", "api")}
    for text in _sentences(planted["chat"]):
        result = inst.chat("-m", text, "--max-tokens", "4", timeout_s=180)
        assert result.returncode == 0, f"circ-chat failed:\n{result.stderr}"
    conversation = tmp_path / "conversation.jsonl"
    conversation.write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "Noted."}]}) + "\n"
        for text in _sentences(planted["import"])))
    result = inst.circ("import", str(conversation), timeout_s=300)
    assert result.returncode == 0, f"circ import failed:\n{result.stdout}\n{result.stderr}"
    from services.ingest.importer import (
        inbox_dir,  # a file dropped into the inbox, as a sync tool would
    )

    inbox = inbox_dir(inst.paths)
    inbox.mkdir(parents=True, exist_ok=True)
    part = inbox / ".dropped.jsonl.part"
    part.write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "Noted."}]}) + "\n"
        for text in _sentences(planted["inbox"])))
    part.rename(inbox / "dropped.jsonl")
    wait_until(lambda: any(e["body"].get("file") == "dropped.jsonl" for e in inst.events("inbox.imported")),
               120, "ingest to import the inbox file", interval_s=0.3)
    pong = ping(inst.paths, "api", timeout_s=10.0)
    assert pong is not None and pong.ready
    client = openai.OpenAI(base_url=pong.details["url"] + "/v1", api_key="unused-on-loopback",
                           timeout=180.0, max_retries=0)
    for text in _sentences(planted["api"]):
        reply = client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=4, temperature=0,
                                               messages=[{"role": "user", "content": text}])
        assert reply.choices[0].message.content is not None
    # Eight turns in the log; ingest decides each before the night.
    turns = inst.events(TURN_TYPE)
    assert len(turns) == 8, [t["body"]["user_text"][:40] for t in turns]
    last = max(t["seq"] for t in turns)
    wait_until(lambda: any(e["body"].get("turn_seq") == last for e in inst.events()
                           if e["type"] in ("memory.stored", "memory.skipped", "memory.failed")),
               120, "ingest to decide the last turn", interval_s=0.3)
    return planted


def _night(inst: Instance) -> dict[str, Any]:
    result = inst.circ("sleep", "--wait", "--json", "--steps", str(STEPS), "--timeout", "600", timeout_s=660)
    summary = json.loads(result.stdout)
    assert summary["verdict"] in ("promote", "reject"), f"{result.stdout}\n{result.stderr}\n{inst.logs()}"
    return summary


def _scan(home: Path, planted: dict[str, dict[str, str]]) -> tuple[dict[str, list[str]], int, int]:
    """{relative path: [channel.kind found]} over every file under ``home``; files and bytes read."""
    found: dict[str, list[str]] = {}
    files = size = 0
    for path in sorted(home.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        assert path.stat().st_size < MAX_SCAN_BYTES, f"unexpectedly large file {path}"
        data = path.read_bytes()
        files, size = files + 1, size + len(data)
        hits = [f"{channel}.{kind}" for channel, c in planted.items() for kind, secret in c.items()
                if any(needle in data for needle in _needles(secret))]
        if hits:
            found[str(path.relative_to(home))] = hits
    return found, files, size


def test_secrets_stay_in_the_raw_log_only(canary_home: tuple[Instance, bool], tmp_path: Path) -> None:
    inst, redact_before_log = canary_home
    planted = _plant(inst, tmp_path)
    summary = _night(inst)
    found, files, size = _scan(inst.home, planted)
    in_log = {path: hits for path, hits in found.items() if Path(path).name in RAW_LOG}
    # The user's own inbox file, archived as they dropped it, unless redact_before_log forbids a raw copy.
    archived = {path: hits for path, hits in found.items() if "/inbox/imported/" in path}
    elsewhere = {path: hits for path, hits in found.items() if path not in in_log
                 and (redact_before_log or path not in archived)}
    print(json.dumps({"variant": "redact_before_log" if redact_before_log else "raw_log",
                      "verdict": summary["verdict"], "files_scanned": files, "bytes_scanned": size,
                      "secrets": sum(len(c) for c in planted.values()),
                      "found_in_raw_log": sorted({h for hits in in_log.values() for h in hits}),
                      "found_elsewhere": elsewhere}))
    # The scan saw the pipeline's outputs, not just an empty home.
    assert (inst.paths.adapters / summary["adapter_id"]).is_dir(), summary
    assert any(p.suffix == ".log" for p in inst.home.rglob("*")), "no daemon logs were scanned"
    assert not elsewhere, f"secrets outside the raw event log: {elsewhere}"
    if redact_before_log:
        assert not in_log, f"redact_before_log=true, yet the event log holds {in_log}"
    else:
        # The control: the log does hold what was typed (else the scan would prove nothing).
        assert {h.split(".")[0] for hits in in_log.values() for h in hits} == {"chat", "import", "inbox", "api"}, in_log
        assert archived, "the inbox file was not archived under data/inbox/imported/"
