"""The adapter store: sealed adapters, hash checks, atomic promotion, rollback, pins, retention,
and what kill -9 in the middle of a commit or a promotion leaves behind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from services.common.paths import REPO_ROOT
from services.lib.adapters.store import AdapterInfo, AdapterStore, AdapterStoreError

KILL_TRIALS = 30


@pytest.fixture
def store(tmp_path: Path) -> AdapterStore:
    return AdapterStore(tmp_path / "adapters")


def make_adapter(store: AdapterStore, adapter_id: str | None = None, *, payload: bytes = b"",
                 manifest: dict | None = None) -> str:
    """Stage the files an adapter has (weights, config, dataset) and commit them."""
    adapter_id = adapter_id or store.new_id()
    staging = store.stage(adapter_id)
    (staging / "adapters.safetensors").write_bytes(payload or os.urandom(4096))
    (staging / "adapter_config.json").write_text(json.dumps({"fine_tune_type": "lora", "num_layers": 2}))
    (staging / "dataset").mkdir(exist_ok=True)
    (staging / "dataset" / "train.jsonl").write_text('{"messages": []}\n')
    store.commit(adapter_id, manifest if manifest is not None else {"dataset": {"examples": 1}})
    return adapter_id


def ids(n: int) -> list[str]:
    """Ids that sort in creation order, like new_id()'s."""
    return [f"ad-20250101-0000{i:02d}-abcd" for i in range(n)]


# ----------------------------------------------------------------- ids


def test_new_ids_are_valid_sortable_and_distinct(store: AdapterStore) -> None:
    made = [store.new_id() for _ in range(50)]
    assert len(set(made)) == 50
    for adapter_id in made:
        assert adapter_id.startswith("ad-") and store.check_id(adapter_id) == adapter_id
    assert made[0][:18] <= made[-1][:18]


@pytest.mark.parametrize("bad", ["../evil", "a/b", ".staging", "..", "", "current", "none", "x" * 81,
                                 "ad-1.2", "/etc", "ad 1"])
def test_every_method_refuses_bad_ids(store: AdapterStore, bad: str) -> None:
    """No argument can name a path outside the store (or the store's own files)."""
    calls = [lambda: store.stage(bad), lambda: store.commit(bad, {}), lambda: store.verify(bad),
             lambda: store.promote(bad), lambda: store.pin(bad), lambda: store.show(bad),
             lambda: store.update_manifest(bad, "k", 1), lambda: store.path(bad)]
    if bad.lower() != "none":  # rollback("none") means the base model
        calls.append(lambda: store.rollback(bad))
    for call in calls:
        with pytest.raises(AdapterStoreError):
            call()


# ----------------------------------------------------------------- commit and verify


def test_commit_seals_every_file_with_its_hash(store: AdapterStore) -> None:
    adapter_id = make_adapter(store, manifest={"dataset": {"examples": 3}, "final_loss": 0.5})
    directory = store.root / adapter_id
    assert directory.is_dir() and not (store.staging_root / adapter_id).exists()
    manifest = json.loads((directory / "manifest.json").read_text())
    assert set(manifest["sha256"]) == {"adapters.safetensors", "adapter_config.json", "dataset/train.jsonl"}
    assert manifest["adapter_id"] == adapter_id and manifest["dataset"] == {"examples": 3}
    assert manifest["created"]
    assert store.verify(adapter_id) == []
    assert store.hashes(adapter_id) == manifest["sha256"]


def test_commit_refuses_incomplete_or_duplicate(store: AdapterStore) -> None:
    staging = store.stage("ad-x")
    (staging / "adapter_config.json").write_text("{}")
    with pytest.raises(AdapterStoreError, match="adapters.safetensors"):
        store.commit("ad-x", {})
    with pytest.raises(AdapterStoreError, match="nothing staged"):
        store.commit("ad-y", {})
    done = make_adapter(store)
    with pytest.raises(AdapterStoreError, match="already committed"):
        store.stage(done)


def test_stage_is_idempotent(store: AdapterStore) -> None:
    assert store.stage("ad-a") == store.stage("ad-a") == store.staging_root / "ad-a"


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "extra", "manifest"])
def test_corruption_fails_verify_and_promote_refuses(store: AdapterStore, damage: str) -> None:
    adapter_id = make_adapter(store)
    directory = store.root / adapter_id
    weights = directory / "adapters.safetensors"
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[100] ^= 0x01
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-1])
    elif damage == "delete":
        weights.unlink()
    elif damage == "extra":
        (directory / "surprise.bin").write_bytes(b"x")
    else:
        (directory / "manifest.json").write_text("{not json")
    assert store.verify(adapter_id)
    with pytest.raises(AdapterStoreError, match="refusing to promote"):
        store.promote(adapter_id)
    assert store.current() is None
    with pytest.raises(AdapterStoreError):
        store.update_manifest(adapter_id, "evaluation", {"verdict": "promote"})


def test_update_manifest_adds_the_evaluation_and_keeps_hashes(store: AdapterStore) -> None:
    adapter_id = make_adapter(store, manifest={"final_loss": 0.25})
    evaluation = {"verdict": "promote", "metrics": {"fact_recall": 0.9, "canary_acc": 0.75, "other": 1.0}}
    store.update_manifest(adapter_id, "evaluation", evaluation)
    store.update_manifest(adapter_id, "verdict", "promote")
    assert store.verify(adapter_id) == []
    shown = store.show(adapter_id)
    assert shown["evaluation"] == evaluation and shown["problems"] == []
    [info] = store.list()
    assert info == AdapterInfo(adapter_id=adapter_id, created=shown["created"], verdict="promote",
                               figures={"fact_recall": 0.9, "canary_acc": 0.75, "final_loss": 0.25})
    with pytest.raises(AdapterStoreError, match="belongs to the store"):
        store.update_manifest(adapter_id, "sha256", {})


# ----------------------------------------------------------------- promote and rollback


def test_promote_swaps_current_atomically_by_symlink(store: AdapterStore) -> None:
    a, b = (make_adapter(store, i) for i in ids(2))
    assert store.current() is None
    assert store.promote(a) is None
    assert store.promote(b) == a
    link = store.root / "current"
    assert link.is_symlink() and os.readlink(link) == b  # relative: the tree can move
    assert (link / "adapters.safetensors").is_file()
    assert store.current() == b and store.previous() == a
    assert not [p for p in store.root.iterdir() if p.name.endswith(".tmp")]


def test_rollback_walks_back_through_promotions_then_to_base(store: AdapterStore) -> None:
    a, b, c = (make_adapter(store, i) for i in ids(3))
    for adapter_id in (a, b, c):
        store.promote(adapter_id)
    assert store.rollback() == b and store.current() == b
    assert store.rollback() == a and store.current() == a
    assert store.rollback() is None and store.current() is None
    assert not (store.root / "current").exists()
    assert store.rollback() is None  # nothing further back: stays on the base model


def test_rollback_to_a_named_adapter_and_to_base(store: AdapterStore) -> None:
    a, b, c = (make_adapter(store, i) for i in ids(3))
    for adapter_id in (a, b, c):
        store.promote(adapter_id)
    assert store.rollback(a) == a and store.current() == a
    assert store.rollback() is None  # a was the first one promoted
    assert store.rollback(c) == c
    assert store.rollback("none") is None and store.current() is None
    store.promote(b)
    store.rollback_to_base()
    assert store.current() is None


def test_rollback_skips_adapters_that_no_longer_verify(store: AdapterStore) -> None:
    a, b, c = (make_adapter(store, i) for i in ids(3))
    for adapter_id in (a, b, c):
        store.promote(adapter_id)
    (store.root / b / "adapters.safetensors").write_bytes(b"damaged")
    assert store.rollback() == a
    with pytest.raises(AdapterStoreError, match="refusing to roll back"):
        store.rollback(b)


def test_history_follows_the_symlink_after_a_crash(store: AdapterStore) -> None:
    """A crash between the symlink swap and the history write: the symlink wins."""
    a, b = (make_adapter(store, i) for i in ids(2))
    store.promote(a)
    os.symlink(b, store.root / ".current-x.tmp")
    os.replace(store.root / ".current-x.tmp", store.root / "current")  # as promote(b) does, then "dies"
    assert store.current() == b and store.previous() == a
    assert store.rollback() == a


# ----------------------------------------------------------------- list, pins, retention


def test_list_marks_current_pinned_and_broken(store: AdapterStore) -> None:
    a, b, c = (make_adapter(store, i) for i in ids(3))
    store.promote(b)
    store.pin(a)
    (store.root / c / "manifest.json").write_text("garbage")
    rows = {row.adapter_id: row for row in store.list()}
    assert set(rows) == {a, b, c}
    assert rows[a].pinned and not rows[a].current and rows[a].verdict == "pending"
    assert rows[b].current and not rows[b].pinned
    assert rows[c].verdict == "broken" and "unreadable" in rows[c].problem
    store.pin(a, pinned=False)
    assert not any(row.pinned for row in store.list())
    with pytest.raises(AdapterStoreError, match="does not exist"):
        store.pin("ad-missing")


def test_retention_keeps_last_n_current_previous_and_pinned(store: AdapterStore) -> None:
    made = [make_adapter(store, i) for i in ids(8)]
    store.promote(made[1])
    store.promote(made[2])  # current; made[1] is the previous one
    store.pin(made[0])
    deleted = store.retain(keep_last=2)
    assert sorted(deleted) == made[3:6]
    assert store.ids() == [made[0], made[1], made[2], made[6], made[7]]
    assert store.current() == made[2] and store.rollback() == made[1]
    # Rolled back from made[2]: it is no longer current nor what rollback returns to.
    assert store.retain(keep_last=0) == [made[2], made[6], made[7]]
    assert set(store.ids()) == {made[0], made[1]}  # the current one and the pinned one
    assert not list(store.staging_root.iterdir())


def test_cleanup_staging_removes_leftovers_only(store: AdapterStore) -> None:
    kept = make_adapter(store)
    store.promote(kept)
    half = store.stage("ad-half")
    (half / "adapters.safetensors").write_bytes(b"partial")
    (store.staging_root / "deleted-ad-old-ab12").mkdir()
    os.symlink(kept, store.root / ".current-dead.tmp")
    (store.root / ".history.json.123.tmp").write_text("{")
    (store.root / kept / ".manifest.json.9.tmp").write_text("{")
    removed = store.cleanup_staging()
    assert set(removed) == {".staging/ad-half", ".staging/deleted-ad-old-ab12", ".current-dead.tmp",
                            ".history.json.123.tmp", f"{kept}/.manifest.json.9.tmp"}
    assert not list(store.staging_root.iterdir())
    assert store.current() == kept and store.verify(kept) == []
    assert store.cleanup_staging() == []


# ----------------------------------------------------------------- kill -9


# Loops over the write paths of a sleep (commit, promote, retention, an
# occasional rollback) as fast as it can until it is killed.
CHURN = textwrap.dedent("""
    import os, random, sys
    from services.lib.adapters.store import AdapterStore
    store = AdapterStore(sys.argv[1])
    rng = random.Random(int(sys.argv[2]))
    print("ready", flush=True)
    while True:
        adapter_id = store.new_id()
        staging = store.stage(adapter_id)
        (staging / "adapters.safetensors").write_bytes(os.urandom(rng.choice([1, 256, 1024]) * 1024))
        (staging / "adapter_config.json").write_text('{"fine_tune_type": "lora"}')
        os.makedirs(staging / "dataset", exist_ok=True)
        (staging / "dataset" / "train.jsonl").write_text("{}\\n" * rng.randint(1, 500))
        store.commit(adapter_id, {"trial": sys.argv[2]})
        store.update_manifest(adapter_id, "verdict", "promote")
        store.promote(adapter_id)
        if rng.random() < 0.2:
            store.rollback()
        store.retain(3)
""")


def _check_invariants(store: AdapterStore) -> None:
    current = store.current()
    link = store.root / "current"
    if current is None:
        assert not link.exists(), "current points at something that is not an adapter"
    else:
        assert store.verify(current) == [], f"current ({current}) is not a complete, verified adapter"
        for name in ("adapters.safetensors", "adapter_config.json", "manifest.json"):
            assert (link / name).is_file()
    for adapter_id in store.ids():  # commits are all-or-nothing too
        assert store.verify(adapter_id) == [], adapter_id


def test_kill9_during_commit_and_promote_never_breaks_current(store: AdapterStore) -> None:
    """kill -9 at random moments: current always resolves to a verified adapter or is absent,
    and cleanup_staging clears whatever the killed process left half-written."""
    rng = random.Random(1234)
    store.root.mkdir(parents=True)
    promoted_seen = 0
    for trial in range(KILL_TRIALS):
        proc = subprocess.Popen([sys.executable, "-c", CHURN, str(store.root), str(trial)], cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        _check_invariants(store)
        promoted_seen += store.current() is not None
        store.cleanup_staging()
        assert not list(store.staging_root.iterdir()) if store.staging_root.exists() else True
        assert not [p for p in store.root.rglob(".*.tmp")]
        _check_invariants(store)
    assert promoted_seen > KILL_TRIALS // 3, "the kills should mostly land after some promotions"
    # The store still works normally afterwards.
    fresh = make_adapter(store)
    store.promote(fresh)
    assert store.current() == fresh
    store.rollback()
    _check_invariants(store)


def test_history_json_meets_its_contract_and_sheds_entries_that_do_not(store: AdapterStore) -> None:
    import msgspec

    from protocol.adapter_files import AdapterHistory

    first, second = make_adapter(store), make_adapter(store)
    store.promote(first)
    raw = json.loads((store.root / "history.json").read_text())
    raw["log"].insert(0, {"action": 7, "adapter_id": ["not", "an", "id"]})  # a damaged entry
    (store.root / "history.json").write_text(json.dumps(raw))
    store.promote(second)
    history = msgspec.json.decode((store.root / "history.json").read_bytes(), type=AdapterHistory)
    assert history.stack == [first, second]
    assert [(e.action, e.adapter_id, e.previous_id) for e in history.log] == [
        ("promote", first, None), ("promote", second, first)]
