"""The model's own rewordings of a night's questions (services.trainer.paraphrase and its worker)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.paths import REPO_ROOT, models_dir
from services.trainer.dataset import build_dataset
from services.trainer.memories import MemoryRecord
from services.trainer.paraphrase import (
    QUESTION_PROMPTS,
    ProposalCache,
    collect_requests,
    last_line,
    proposals_from,
    propose,
    read_requests,
    request_key,
    write_requests,
)
from services.trainer.runner import run_paraphraser


def mem(seq: int, text: str) -> MemoryRecord:
    return MemoryRecord(memory_id=f"m{seq}.0", seq=seq, chunk=0, route="both", tags=[], text=text,
                        forgotten=False, ts=1747300000.0 + seq)


NIGHT = [mem(1, "My cat is called Miso."), mem(2, "My sister lives in Lisbon.")]


def test_last_line_drops_an_echoed_instruction() -> None:
    assert last_line("Rewrite this question:\n\nWhere is my sister's home?\n") == "Where is my sister's home?"
    assert last_line("  \n") == ""


def test_first_question_takes_the_reworded_answer_the_others_a_template_one() -> None:
    replies = ["Where is my sister's home?", "", "My sister's home is Lisbon."]
    assert len(replies) == len(QUESTION_PROMPTS) + 1
    assert proposals_from(replies) == [("Where is my sister's home?", "My sister's home is Lisbon.")]
    assert proposals_from(["", "In which city does my sister live?", ""]) == [
        ("In which city does my sister live?", None)]


def test_propose_keys_each_request_and_checks_the_reply_count() -> None:
    requests = [("Where does my sister live?", "Your sister lives in Lisbon."), ("What is my cat called?", "Miso.")]
    seen: list[str] = []

    def generate(prompts: list[str]) -> list[str]:
        seen.extend(prompts)
        return [f"reply {i}" for i in range(len(prompts))]

    out = propose(requests, generate)
    assert set(out) == {request_key(*r) for r in requests}
    assert len(seen) == len(requests) * (len(QUESTION_PROMPTS) + 1)
    assert requests[0][0] in seen[0] and requests[0][1] in seen[len(QUESTION_PROMPTS)]
    with pytest.raises(ValueError, match="replies for"):
        propose(requests, lambda prompts: prompts[:1])


def test_the_dataset_keeps_only_rewordings_that_still_ask_the_fact() -> None:
    requests = collect_requests(lambda record: build_dataset(NIGHT, paraphraser=record, max_paraphrases=2))
    assert len(requests) == 3  # one per fact (the cat's name, its species, where the sister lives)
    sister_q = next(q for q, a in requests if "Lisbon" in a)
    cat_q = next(q for q, a in requests if "called Miso" in a)
    cache = ProposalCache(None, "m")
    cache.update({
        request_key(*next(r for r in requests if r[0] == sister_q)): [
            ("In which city is my sister's home?", "My sister's home is in Lisbon."),  # kept
            ("Where does your sister live?", None),  # "your": whose fact would flip
        ],
        request_key(*next(r for r in requests if r[0] == cat_q)): [
            ("Is my cat called Miso?", None),  # gives the answer away
            ("What name did I give my cat?", "I call it something."),  # the answer lost the value
        ],
    })
    ds = build_dataset(NIGHT, paraphraser=cache.paraphraser(), max_paraphrases=2)
    assert ds.manifest["paraphrases"] == {"kept": 1, "rejected": 3, "errors": 0}
    questions = [e["messages"][1]["content"] for e in ds.examples]
    assert "In which city is my sister's home?" in questions
    assert not {"Where does your sister live?", "Is my cat called Miso?", "What name did I give my cat?"} & set(questions)


def test_cache_round_trip_missing_and_damage(tmp_path: Path) -> None:
    requests = [("q1?", "a1"), ("q2?", "a2"), ("q1?", "a1")]
    cache = ProposalCache(tmp_path, "model-a")
    assert cache.missing(requests) == [("q1?", "a1"), ("q2?", "a2")]
    cache.update({request_key("q1?", "a1"): [("Q1 again?", None)]})
    again = ProposalCache(tmp_path, "model-a")
    assert again.missing(requests) == [("q2?", "a2")]
    assert again.paraphraser()("q1?", "a1") == [("Q1 again?", None)]
    assert ProposalCache(tmp_path, "model-b").missing(requests) == [("q1?", "a1"), ("q2?", "a2")]
    assert again.path is not None
    again.path.write_text("{not json")
    assert ProposalCache(tmp_path, "model-a").entries == {}  # regenerated, not a crash


def test_requests_file_is_validated(tmp_path: Path) -> None:
    good = tmp_path / "r.jsonl"
    write_requests(good, [("q?", "a")])
    assert read_requests(good) == [("q?", "a")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q?"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_requests(bad)
    proc = subprocess.run([sys.executable, "-m", "services.trainer.paraphrase_worker", "--model", str(tmp_path),
                           "--requests", str(bad), "--out", str(tmp_path / "o.json")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    error = json.loads(proc.stdout.splitlines()[-1])
    assert error["type"] == "error" and "bad.jsonl:1" in error["error"]


@pytest.mark.model
def test_the_worker_rewords_with_the_real_model(tmp_path: Path) -> None:
    from services.lib.models.install import install_model

    model_dir = install_model(None, models_dir())
    requests = collect_requests(lambda record: build_dataset(NIGHT, paraphraser=record, max_paraphrases=2))
    write_requests(tmp_path / "requests.jsonl", requests)
    progress: list[dict] = []
    result = run_paraphraser(model_dir, tmp_path / "requests.jsonl", tmp_path / "out.json",
                             on_progress=progress.append)
    assert result.ok, result.error
    proposals = json.loads((tmp_path / "out.json").read_text())
    assert set(proposals) == {request_key(*r) for r in requests}
    assert progress and progress[-1]["step"] == progress[-1]["steps"] == len(requests)
    assert all(isinstance(q, str) and q for v in proposals.values() for q, _ in v)
    # Whatever the model wrote, the dataset accounts for every proposal.
    cache = ProposalCache(None, "m")
    cache.update({k: [(q, a) for q, a in v] for k, v in proposals.items()})
    stats = build_dataset(NIGHT, paraphraser=cache.paraphraser(), max_paraphrases=2).manifest["paraphrases"]
    offered = sum(min(len(v), 2) for v in proposals.values())
    assert stats["kept"] + stats["rejected"] >= offered and stats["errors"] == 0
