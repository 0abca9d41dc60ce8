"""The night's dataset: fact extraction, templates, filtering, updates, replay, eval items, files.

No model is needed except for the one test that loads the saved files with
mlx-lm's own dataset loader (it needs the tokenizer from the model dir).
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from protocol.trainer_api import EvalItem
from services.lib.facts import (
    ABSTAIN,
    FAVOURITE_POOLS,
    POOLS,
    RELATIONS,
    TEMPLATES,
    Fact,
    answers,
    distractors,
    extract_facts,
    family,
    normalize,
    questions,
)
from services.lib.memory.index import MemoryRecord
from services.trainer.dataset import FALSE_PROBES, build_dataset, load_eval, save_dataset
from services.trainer.identity import IDENTITY_QA, VALID_QA

# ------------------------------------------------------------------ extraction

POSITIVE = [
    ("my cat is called Miso", [("cat", "pet_name", "Miso"), ("Miso", "pet_species", "cat")]),
    ("I have a dog named Rex", [("dog", "pet_name", "Rex"), ("Rex", "pet_species", "dog")]),
    ("My hamster Biscuit is 2 years old",
     [("hamster", "pet_name", "Biscuit"), ("Biscuit", "pet_species", "hamster"), ("hamster", "age", "2")]),
    ("Miso is my cat", [("cat", "pet_name", "Miso"), ("Miso", "pet_species", "cat")]),
    ("my partner is Sam", [("partner", "person_name", "Sam")]),
    ("My best friend is called Leo", [("best friend", "person_name", "Leo")]),
    ("I live in Berlin", [("user", "lives_in", "Berlin")]),
    ("i live in new york", [("user", "lives_in", "New York")]),
    ("We moved from Paris to Lyon last year.", [("user", "lives_in", "Lyon")]),
    ("I just moved to Hamburg from Munich", [("user", "lives_in", "Hamburg")]),
    ("My sister [NAME] lives in Paris", [("sister", "lives_in", "Paris")]),
    ("I'm originally from Porto", [("user", "hometown", "Porto")]),
    ("I live in Berlin and work at Siemens", [("user", "lives_in", "Berlin"), ("user", "works_at", "Siemens")]),
    ("I work as a nurse", [("user", "job", "nurse")]),
    ("my sister is a dentist", [("sister", "job", "dentist")]),
    ("My birthday is on March 3rd.", [("user", "birthday", "March 3rd")]),
    ("I was born on 3 May 1990", [("user", "birthday", "3 May 1990")]),
    ("I am 34 years old", [("user", "age", "34")]),
    ("my favourite food is sushi", [("user", "favourite_food", "sushi")]),
    ("Green is my favourite colour", [("user", "favourite_colour", "green")]),
    ("I'm allergic to peanuts and shellfish",
     [("user", "allergy", "peanuts"), ("user", "allergy", "shellfish")]),
    ("my hobby is climbing", [("user", "hobby", "climbing")]),
    ("I enjoy knitting.", [("user", "hobby", "knitting")]),
    ("I prefer tea over coffee", [("coffee|tea", "preference", "tea")]),
    ("My report is due on Friday", [("report", "deadline", "Friday")]),
    ("I need to submit my tax return by the end of the month",
     [("tax return", "deadline", "the end of the month")]),
]

NEGATIVE = [
    "Do I live in Berlin?",          # a question states nothing
    "my mom is called [NAME]",       # a placeholder is never taught
    "My best friend is called [NAME]",
    "my email is [EMAIL]",
    "I live in [ADDRESS]",
    "I work at [NAME] and [NAME]",
    "call me tomorrow",              # not a name
    "my cat is fluffy",              # an adjective, not a name
    "I live in a small town",        # not a place name
    "I work for myself",
    "I love living here",            # not a hobby
    "my boss is Italian",            # a nationality, not a name
    "I don't live in Rome anymore",
    "I'm tired",
    "hello there",
    "def main(): return 1",
]


@pytest.mark.parametrize(("text", "expected"), POSITIVE)
def test_extracts_facts(text: str, expected: list[tuple[str, str, str]]) -> None:
    facts = extract_facts(text, memory_id="m1.0", seq=1)
    assert [(f.subject, f.relation, f.value) for f in facts] == expected
    assert all(f.memory_id == "m1.0" and f.seq == 1 and f.statement for f in facts)


@pytest.mark.parametrize("text", NEGATIVE)
def test_extracts_nothing(text: str) -> None:
    assert extract_facts(text) == []


def test_no_fact_value_ever_carries_a_placeholder() -> None:
    texts = [t for t, _ in POSITIVE] + NEGATIVE + ["My [NAME] is called [NAME]", "my dog [NAME] is 3 years old"]
    for text in texts:
        for fact in extract_facts(text):
            assert "[" not in fact.value and "[" not in fact.subject, (text, fact)


def test_relative_deadline_becomes_a_date() -> None:
    ts = 1747300000.0  # Thursday 15 May 2025 (UTC); "tomorrow" is Friday 16 May in any timezone near UTC
    (fact,) = extract_facts("My deadline is tomorrow.", ts=ts)
    assert fact.relation == "deadline" and "May" in fact.value


# ------------------------------------------------------------------ templates

SAMPLES = [
    Fact("user", "person_name", "Sam", "s"), Fact("sister", "person_name", "Anna", "s"),
    Fact("cat", "pet_name", "Miso", "s"), Fact("Miso", "pet_species", "cat", "s"),
    Fact("user", "lives_in", "Berlin", "s"), Fact("sister", "lives_in", "Paris", "s"),
    Fact("user", "hometown", "Porto", "s"), Fact("user", "works_at", "Siemens", "s"),
    Fact("user", "job", "nurse", "s"), Fact("user", "birthday", "March 3", "s"),
    Fact("user", "age", "34", "s"), Fact("dog", "age", "3", "s"), Fact("user", "favourite_food", "sushi", "s"),
    Fact("user", "allergy", "peanuts and shellfish", "s"), Fact("user", "hobby", "hiking", "s"),
    Fact("coffee|tea", "preference", "tea", "s"), Fact("report", "deadline", "Friday", "s"),
    Fact("work", "deadline", "14 June", "s"),
]


def test_every_relation_has_enough_templates_in_three_disjoint_sets() -> None:
    assert len(RELATIONS) >= 12
    for relation, t in TEMPLATES.items():
        assert len(t.train) >= 6 and len(t.heldout) >= 3 and len(t.answers) >= 3, relation
        assert not set(t.train) & set(t.heldout), relation
        assert not (set(t.train) | set(t.heldout)) & set(t.answers), relation


@pytest.mark.parametrize("fact", SAMPLES, ids=lambda f: f"{f.subject}-{f.relation}")
def test_rendered_sets_are_disjoint_and_answers_contain_the_value(fact: Fact) -> None:
    train, heldout, replies = questions(fact, "train"), questions(fact, "heldout"), answers(fact)
    assert len(train) >= 6 and len(heldout) >= 3 and len(replies) >= 3
    assert not {normalize(q) for q in train} & {normalize(q) for q in heldout}
    assert not {normalize(q) for q in train + heldout} & {normalize(a) for a in replies}
    assert all(fact.value.lower() in a.lower() for a in replies)
    assert all("{" not in s and "}" not in s for s in train + heldout + replies)


@pytest.mark.parametrize("fact", SAMPLES, ids=lambda f: f"{f.subject}-{f.relation}")
def test_distractors_are_same_type_and_exclude_the_gold(fact: Fact) -> None:
    wrong = distractors(fact, 3, seed=0)
    assert wrong and fact.value.lower() not in [w.lower() for w in wrong]
    assert len(set(wrong)) == len(wrong)
    fam = family(fact.relation)
    pool = {"person_name": POOLS["person"], "pet_name": POOLS["pet"], "pet_species": POOLS["species"],
            "lives_in": POOLS["city"], "hometown": POOLS["city"], "works_at": POOLS["org"], "job": POOLS["job"],
            "hobby": POOLS["hobby"], "favourite": FAVOURITE_POOLS.get(fact.relation.removeprefix("favourite_"))}
    if fam in pool:
        assert set(wrong) <= set(pool[fam])
    elif fam == "age":
        assert all(w.isdigit() for w in wrong)
    elif fam == "birthday":  # "March 3" -> other "<Month> <day>" dates
        assert all(len(w.split()) == 2 and w.split()[1].isdigit() for w in wrong)
    elif fam == "deadline" and fact.value == "Friday":
        assert set(wrong) <= set(POOLS["weekday"])
    elif fam == "allergy":  # a merged value gets merged distractors
        assert all(" and " in w and set(w.split(" and ")) <= set(POOLS["allergen"]) for w in wrong)
    elif fam == "preference":
        assert wrong == ["coffee"]


# ------------------------------------------------------------------ the dataset


def mem(seq: int, text: str, route: str = "both", tags: list[str] | None = None, forgotten: bool = False,
        chunk: int = 0) -> MemoryRecord:
    return MemoryRecord(memory_id=f"m{seq}.{chunk}", seq=seq, chunk=chunk, route=route, tags=tags or [],
                        text="" if forgotten else text, forgotten=forgotten, ts=1747300000.0 + seq)


def qa_for(ds, needle: str) -> list[tuple[str, str]]:
    return [(e["messages"][1]["content"], e["messages"][2]["content"]) for e in ds.replay_pool
            if e["source"]["kind"] == "qa" and needle in e["messages"][2]["content"]]


NIGHT = [
    mem(1, "My cat is called Miso."),
    mem(2, "I live in Paris."),
    mem(3, "I work at Siemens.", tags=["no-train"]),      # opted out of training
    mem(4, "I'm allergic to peanuts.", route="rag"),       # recall only
    mem(5, "My dog is called Rex.", forgotten=True),       # forgotten
    mem(6, "We moved from Paris to Lyon."),                # an update
    mem(7, "Please answer in short sentences.", route="lora"),
    mem(8, "I prefer tea over coffee."),
]


def test_at_least_five_varied_qa_pairs_per_fact() -> None:
    ds = build_dataset(NIGHT, seed=0)
    assert {(f.subject, f.relation) for f in ds.facts} >= {("cat", "pet_name"), ("user", "lives_in")}
    for fact in ds.facts:
        pairs = [(e["messages"][1]["content"], e["messages"][2]["content"]) for e in ds.replay_pool
                 if e["source"].get("fact") == list(fact.key)]
        assert len(pairs) >= 5, fact
        assert len({q for q, _ in pairs}) >= 5  # five different question wordings
        assert len({a for _, a in pairs}) >= 3  # and the answer in several shapes
        assert all(fact.value.lower() in a.lower() for _, a in pairs)
    assert ds.manifest["counts"]["qa"] == sum(1 for e in ds.replay_pool if e["source"]["kind"] == "qa")


def test_example_format_is_mlx_chat() -> None:
    ds = build_dataset(NIGHT, seed=0)
    for example in ds.examples + ds.valid:
        assert set(example) <= {"messages", "context"}  # context: the distill teacher's (sft ignores it)
        roles = [m["role"] for m in example["messages"]]
        assert roles[0] == "system" and roles[-1] == "assistant" and "user" in roles


def test_qa_examples_carry_the_memories_they_come_from() -> None:
    """The distillation teacher reads each QA item's source memories as chat recalls them."""
    old = {"messages": [{"role": "user", "content": "What is my job?"}, {"role": "assistant", "content": "A nurse."}],
           "context": ["I work as a nurse."], "source": {"kind": "qa", "fact": ["user", "job"], "memory_ids": ["m0.0"]}}
    ds = build_dataset(NIGHT, replay=[old], seed=0)
    for e in ds.replay_pool:
        if e["source"]["kind"] == "qa":
            texts = {m.memory_id: m.text for m in NIGHT}
            assert e["context"] == [texts[mid] for mid in e["source"]["memory_ids"]]
    lyon = [e for e in ds.examples if "Lyon" in e["messages"][-1]["content"]]
    assert lyon and all(e["context"] == ["We moved from Paris to Lyon."] for e in lyon)
    identity = [e for e in ds.examples if e["messages"][-1]["content"] == "My name is circadian."]
    assert identity and all("context" not in e for e in identity)
    assert {"messages": old["messages"], "context": old["context"]} in ds.examples  # replay keeps its teacher
    assert "Siemens" not in json.dumps(ds.examples)  # an opted-out memory is no one's context


def test_forgotten_no_train_and_rag_only_memories_are_excluded() -> None:
    ds = build_dataset(NIGHT, seed=0)
    text = json.dumps(ds.examples)
    assert "Siemens" not in text and "peanut" not in text and "Rex" not in text
    assert ds.manifest["excluded"] == {"forgotten": 1, "no_train": 1, "not_trained_route": 1, "empty": 0}
    for gone in ("m3.0", "m4.0", "m5.0"):
        assert gone not in ds.manifest["memory_ids"]
    assert 3 not in ds.manifest["source_seqs"] and 5 not in ds.manifest["source_seqs"]
    assert all(item.answer not in ("Siemens", "peanuts", "Rex") for item in ds.eval_facts)


def test_an_update_teaches_only_the_latest_value() -> None:
    ds = build_dataset(NIGHT, seed=0)
    lives = [f for f in ds.facts if f.key == ("user", "lives_in")]
    assert [f.value for f in lives] == ["Lyon"]
    assert not qa_for(ds, "Paris")
    assert all("Paris" not in e["messages"][-1]["content"] for e in ds.replay_pool)  # (identity has France's)
    assert [f["value"] for f in ds.manifest["superseded"]] == ["Paris"]
    assert [i.answer for i in ds.eval_facts if i.answer in ("Lyon", "Paris")] == ["Lyon"] * 2


def test_a_later_statement_of_the_same_key_wins_and_an_opted_out_update_withholds_the_key() -> None:
    ds = build_dataset([mem(1, "My cat is called Miso."), mem(2, "My cat is called Luna.")], seed=0)
    assert [f.value for f in ds.facts if f.relation == "pet_name"] == ["Luna"]
    ds = build_dataset([mem(1, "I live in Paris."), mem(2, "I live in Rome.", tags=["no-train"])], seed=0)
    assert not [f for f in ds.facts if f.relation == "lives_in"]  # never teach the stale Paris
    assert [f["value"] for f in ds.manifest["withheld"]] == ["Rome"]


def test_multi_valued_relations_accumulate() -> None:
    ds = build_dataset([mem(1, "I'm allergic to peanuts."), mem(2, "I am also allergic to shellfish.")], seed=0)
    (allergy,) = [f for f in ds.facts if f.relation == "allergy"]
    assert allergy.value == "peanuts and shellfish"


def test_assistant_turns_only_for_lora_routed_memories_without_facts() -> None:
    turns = {1: ("My cat is called Miso", "Miso is a lovely name for a dog!"),  # wrong: facts use templates
             7: ("Please answer in short sentences.", "Sure. I will keep it short."),
             9: ("I feel a bit tired today", "Rest well."),
             10: ("From now on, sign off with a smile", "Hello [NAME]! Will do :)")}
    night = NIGHT + [mem(9, "I feel a bit tired today"), mem(10, "From now on, sign off with a smile", route="lora")]
    ds = build_dataset(night, turns=turns, seed=0)
    chats = [e for e in ds.replay_pool if e["source"]["kind"] == "chat"]
    assert [(e["messages"][1]["content"], e["messages"][2]["content"]) for e in chats] == [
        ("Please answer in short sentences.", "Sure. I will keep it short.")]
    assert ds.manifest["counts"]["chat"] == 1
    assert "Miso is a lovely name for a dog!" not in json.dumps(ds.examples)
    assert ds.manifest["chat_skipped"] == {"route_both_left_to_recall": 1, "placeholder_in_reply": 1}
    assert "m9.0" in ds.manifest["untaught"]
    assert build_dataset(NIGHT, seed=0).manifest["counts"]["chat"] == 0  # no turns given: no chat examples


def test_replay_is_included_counted_and_filtered() -> None:
    old = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "What is my job?"},
                        {"role": "assistant", "content": "You are a nurse."}],
           "source": {"kind": "qa", "fact": ["user", "job"], "memory_ids": ["m0.0"], "seqs": [0]}}
    stale = {"messages": [{"role": "user", "content": "Where do I live?"},
                          {"role": "assistant", "content": "You live in Oslo."}],
             "source": {"kind": "qa", "fact": ["user", "lives_in"], "memory_ids": ["m0.1"], "seqs": [0]}}
    erased = {"messages": [{"role": "user", "content": "What is my dog called?"},
                           {"role": "assistant", "content": "Rex."}],
              "source": {"kind": "qa", "fact": ["dog", "pet_name"], "memory_ids": ["m0.2"]}}
    broken = {"messages": [{"role": "user", "content": "no answer"}]}
    ds = build_dataset(NIGHT, replay=[old, stale, erased, broken], forgotten_ids={"m0.2"}, seed=0)
    assert ds.manifest["counts"]["replay"] == 1
    assert {"messages": old["messages"]} in ds.examples
    assert ds.manifest["replay_dropped"] == {"invalid": 1, "superseded": 1, "forgotten": 1}
    assert "Oslo" not in json.dumps(ds.examples) and "Rex." not in json.dumps(ds.examples)
    assert all(e["source"]["kind"] != "replay" for e in ds.replay_pool)  # the pool holds only tonight's
    counts = ds.manifest["counts"]
    assert sum(counts.values()) == len(ds.examples) == ds.manifest["total"]
    assert counts["identity"] == len(IDENTITY_QA)


def test_abstentions_ask_only_unstated_keys_that_no_false_probe_asks() -> None:
    """abstain_share adds "I don't know" examples on keys never stated and never gated."""
    from services.trainer.dataset import ABSTAIN_PROBES, FALSE_PROBES

    assert not set(ABSTAIN_PROBES) & set(FALSE_PROBES)  # the gate never scores a trained abstention
    plain = build_dataset(NIGHT, seed=0)
    assert plain.manifest["counts"]["abstain"] == 0
    uncle = mem(9, "My uncle is called Bartholomew.")
    ds = build_dataset(NIGHT + [uncle], seed=0, abstain_share=0.5, known_facts=[("aunt", "person_name")])
    qa = ds.manifest["counts"]["qa"]
    identity_questions = {q for q, _ in IDENTITY_QA}
    abstain = [e for e in ds.examples if e["messages"][-1]["content"].startswith("I don't know")
               and e["messages"][1]["content"] not in identity_questions]
    assert ds.manifest["counts"]["abstain"] == round(qa * 0.5) == len(abstain) > 0
    asked = " ".join(e["messages"][1]["content"] for e in abstain)
    assert "uncle's name" not in asked and "uncle go by" not in asked  # stated tonight: taught, not denied
    assert "aunt's name" not in asked and "aunt go by" not in asked  # known from an earlier night
    assert len({e["messages"][1]["content"] for e in abstain}) == len(abstain)  # no question twice
    assert all(e["source"]["kind"] != "abstain" for e in ds.replay_pool)  # never replayed
    assert sum(ds.manifest["counts"].values()) == len(ds.examples)


def test_identity_examples_can_be_replaced_and_valid_is_never_trained() -> None:
    custom = [{"messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "Me."}]}]
    ds = build_dataset(NIGHT, identity_examples=custom, seed=0)
    assert ds.manifest["counts"]["identity"] == 1
    trained = {json.dumps(e, sort_keys=True) for e in ds.examples}
    assert ds.valid and all(json.dumps(v, sort_keys=True) not in trained for v in ds.valid)
    assert not {q for q, _ in VALID_QA} & {q for q, _ in IDENTITY_QA}


def test_eval_items_are_held_out_with_same_type_distractors() -> None:
    ds = build_dataset(NIGHT, seed=0)
    trained_questions = {normalize(e["messages"][1]["content"]) for e in ds.examples}
    assert ds.eval_facts and all(isinstance(i, EvalItem) and i.kind == "fact" for i in ds.eval_facts)
    for item in ds.eval_facts:
        assert normalize(item.question) not in trained_questions
        assert item.answer not in item.distractors and item.distractors
    by_answer = {i.answer: i for i in ds.eval_facts}
    assert set(by_answer["Miso"].distractors) <= set(POOLS["pet"])
    assert set(by_answer["Lyon"].distractors) <= set(POOLS["city"])
    assert by_answer["tea"].distractors == ["coffee"]
    assert ds.manifest["eval"]["facts"] == len(ds.eval_facts)


def test_false_recall_items_ask_about_facts_never_stated() -> None:
    ds = build_dataset(NIGHT, seed=0, false_count=len(FALSE_PROBES),
                       known_facts=[("user", "job"), Fact("sister", "person_name", "Anna", "")])
    assert ds.false_facts and all(i.kind == "false" and i.answer == ABSTAIN for i in ds.false_facts)
    stated = {f.key for f in ds.facts} | {("user", "job"), ("sister", "person_name")}
    asked = set()
    for item in ds.false_facts:
        assert item.distractors and ABSTAIN not in item.distractors
        for subject, relation in FALSE_PROBES:
            probe = Fact(subject, relation, "30" if relation == "age" else subject.split("|")[0], "")
            if item.question in questions(probe, "heldout"):
                asked.add((subject.lower(), relation))
    assert asked and not asked & stated
    # Stated facts are never probes, even one that was not trained on (Siemens, #no-train): recall may know it.
    assert ("user", "lives_in") not in asked and ("user", "works_at") not in asked
    never_probed = {("user", "lives_in"), ("user", "works_at"), ("user", "allergy"), ("user", "job"),
                    ("sister", "person_name")}  # stated tonight (trained or not), or known from earlier nights
    assert len(ds.false_facts) == len(FALSE_PROBES) - len(never_probed)


def test_paraphrases_are_filtered() -> None:
    calls = []

    def paraphraser(question: str, answer: str) -> list:
        calls.append((question, answer))
        if "Miso" in question:  # the pet_species fact: nothing to offer
            return []
        return ["What is my cat called?",                    # a TRAIN template: not new
                "Do you remember what my cat is called?",    # a HELDOUT template: would leak into eval
                "Could you tell me the name of the cat I own?",
                "What is your cat called?",                  # flips whose cat
                "Is my cat called Miso?",                    # gives the answer away
                "Where did I park the car?",                 # another topic
                ("What do I call the little cat of mine?", "I think the cat is named Miso."),
                ("Which name did I pick for my cat?", "No idea."),  # answer lost the value
                ]

    ds = build_dataset([mem(1, "My cat is called Miso.")], paraphraser=paraphraser, max_paraphrases=5, seed=0)
    pairs = [(e["messages"][1]["content"], e["messages"][2]["content"]) for e in ds.replay_pool
             if e["source"]["fact"] == ["cat", "pet_name"]]
    questions_kept = [q for q, _ in pairs if q not in questions(ds.facts[0], "train")]
    assert questions_kept == ["Could you tell me the name of the cat I own?", "What do I call the little cat of mine?"]
    assert ("What do I call the little cat of mine?", "I think the cat is named Miso.") in pairs
    assert ds.manifest["paraphrases"]["kept"] == 2 and ds.manifest["paraphrases"]["rejected"] == 6
    assert calls  # asked once per fact (pet_name and pet_species)

    def broken(question: str, answer: str) -> list[str]:
        raise RuntimeError("model crashed")

    ds = build_dataset([mem(1, "My cat is called Miso.")], paraphraser=broken, seed=0)
    assert ds.manifest["paraphrases"]["errors"] == 2 and len(qa_for(ds, "Miso")) >= 5


def test_deterministic_for_a_seed() -> None:
    a, b = build_dataset(NIGHT, seed=3), build_dataset(NIGHT, seed=3)
    assert a.examples == b.examples and a.manifest == b.manifest
    assert a.eval_facts == b.eval_facts and a.false_facts == b.false_facts
    assert build_dataset(NIGHT, seed=4).examples != a.examples


def test_manifest_records_counts_sources_and_settings() -> None:
    ds = build_dataset(NIGHT, phrasings=6, seed=7)
    m = ds.manifest
    assert set(m["counts"]) == {"qa", "chat", "identity", "abstain", "replay"}
    assert m["source_seqs"] == [1, 6, 8] and m["memory_ids"] == ["m1.0", "m6.0", "m8.0"]
    assert m["phrasings"] == 6 and m["seed"] == 7 and m["max_seq"] == 8
    assert {(f["subject"], f["relation"], f["value"]) for f in m["facts"]} == {
        ("cat", "pet_name", "Miso"), ("Miso", "pet_species", "cat"), ("user", "lives_in", "Lyon"),
        ("coffee|tea", "preference", "tea")}
    json.dumps(m)  # plain JSON


def test_save_dataset_writes_the_files(tmp_path: Path) -> None:
    ds = build_dataset(NIGHT, seed=0)
    save_dataset(ds, tmp_path / "dataset")
    out = tmp_path / "dataset"
    assert sorted(p.name for p in out.iterdir()) == ["eval.json", "manifest.json", "train.jsonl", "valid.jsonl"]
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert train == ds.examples
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == ds.manifest["counts"] and manifest["files"]["train.jsonl"]["lines"] == len(train)
    facts, false = load_eval(out)
    assert facts == ds.eval_facts and false == ds.false_facts
    assert (out / "train.jsonl").stat().st_mode & 0o077 == 0


@pytest.mark.model
def test_saved_dataset_loads_with_mlx_lm(tmp_path: Path) -> None:
    from mlx_lm.tuner.datasets import CacheDataset, load_local_dataset
    from mlx_lm.utils import load_tokenizer

    from services.common.paths import models_dir
    from services.lib.models.install import install_model

    tokenizer = load_tokenizer(install_model(None, models_dir()))
    ds = build_dataset(NIGHT, seed=0)
    save_dataset(ds, tmp_path)
    config = types.SimpleNamespace(mask_prompt=True)
    train, valid, test = load_local_dataset(tmp_path, tokenizer, config)
    assert len(train) == len(ds.examples) and len(valid) == len(ds.valid) and test == []
    tokens, offset = CacheDataset(train)[0]
    assert 0 < offset < len(tokens)  # the prompt is masked, the answer is trained
    answer = tokenizer.decode(tokens[offset:])
    assert ds.examples[0]["messages"][-1]["content"] in answer
