"""A seeded generator of synthetic "days" of user turns for the memory benchmark.

A world is a list of days. Each day the user states ``facts_per_day`` facts
about themselves, fictitious people (by role: "my sister", "my boss"; never
by name, because the redactor turns person names into ``[NAME]``), pets,
deadlines and preferences, each once, wrapped in chit-chat ("Long week at
last. By the way, my cat is called Miso. Any ideas for dinner?"), shuffled
among distractor turns (small talk, general questions, code, URLs, JSON,
fake PII) that state nothing. From day 2 on, ``update_share`` of the day's
facts change an earlier single-valued fact ("we moved from X to Y").

Ground truth is exactly what :func:`services.lib.facts.extract_facts`
gets from the redacted turn, so a recall failure in the benchmark is the
memory's failure, not the extractor's: ``generate_world`` checks every turn
through the redactor and the extractor and raises ``ValueError`` naming the
template that broke. Naming a pet ("my cat is called Miso") also states its
species, keyed by the name (``("miso", "pet_species")``); that fact comes
with the ``pet_name`` one and is not listed separately. Days are numbered
from 1.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from services.lib.facts import FAVOURITE_POOLS, MULTI_VALUED, extract_facts, family, normalize
from services.lib.privacy.redact import redact

__all__ = ["FAMILIES", "STATEMENTS", "UPDATABLE", "Day", "World", "WorldFact", "generate_world"]

# ---------------------------------------------------------------------------
# Vocabulary. Every value survives redaction unchanged (checked at generation).
# ---------------------------------------------------------------------------

# Single-person roles facts.py resolves (no aliases such as mum/mother: one key per person).
ROLES = ("best friend", "sister", "brother", "older sister", "younger brother", "mother", "father", "partner",
         "son", "daughter", "boss", "manager", "grandmother", "grandfather", "roommate", "flatmate", "therapist",
         "doctor", "dentist", "landlord", "landlady", "stepmother", "stepfather", "aunt", "uncle", "godmother",
         "godfather", "twin")
PETS = ("cat", "dog", "rabbit", "hamster", "parrot", "budgie", "goldfish", "turtle", "tortoise", "horse", "pony",
        "snake", "lizard", "ferret", "gecko", "guinea pig", "chinchilla", "hedgehog", "cockatiel", "rat", "mouse")
# Plural items ("taxes", "slides") would need "are due", which the extractor does not read.
ITEMS = ("tax return", "grant proposal", "code review", "project", "report", "thesis", "dissertation", "essay",
         "paper", "assignment", "presentation", "application", "proposal", "homework", "article", "manuscript",
         "submission", "invoice", "review")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
CITIES = tuple("Berlin Paris Madrid Rome Lisbon Vienna Amsterdam Prague Dublin Copenhagen Stockholm Oslo Helsinki "
               "Warsaw Budapest Athens Brussels Zurich Munich Barcelona London Manchester Edinburgh Toronto "
               "Boston Chicago Seattle Denver Austin Sydney Melbourne Tokyo Osaka Seoul Singapore Lyon Hamburg "
               "Porto Krakow Valencia Seville Bologna Naples Turin Marseille Bordeaux Geneva Basel Antwerp "
               "Rotterdam Utrecht Gothenburg Bergen Tallinn Riga Vilnius Ljubljana Zagreb Montreal Vancouver "
               "Glasgow Bristol Leeds Cork Kyoto Auckland Wellington".split()) + (
    "New York", "Buenos Aires", "Mexico City", "Cape Town", "Hong Kong")
ORGS = tuple("Siemens Microsoft Google IKEA Spotify SAP Philips Nestlé Airbus Bosch Unilever Lufthansa Adidas "
             "Ericsson Nokia Volvo Lego Heineken Toyota Samsung Nintendo Sony Zalando Novartis Roche Maersk "
             "Carlsberg Audi Porsche Decathlon Renault Michelin Danone Barilla Lavazza Pirelli Initech Globex "
             "Hooli Acme Cyberdyne Soylent".split()) + (
    "Deutsche Bahn", "Pied Piper", "Dunder Mifflin", "Aperture Science", "Umbrella Labs", "a bakery",
    "a hospital", "a bank", "a law firm", "a school", "a startup", "a university", "a museum", "a bookshop")
JOBS = ("nurse", "teacher", "software engineer", "accountant", "architect", "chef", "graphic designer", "lawyer",
        "pharmacist", "electrician", "journalist", "librarian", "physiotherapist", "data analyst", "photographer",
        "carpenter", "dentist", "translator", "project manager", "veterinarian", "pilot", "plumber", "mechanic",
        "baker", "florist", "barista", "economist", "biologist", "chemist", "midwife", "optician", "hairdresser",
        "illustrator", "paramedic", "firefighter", "research scientist", "music teacher", "civil engineer",
        "web developer", "pastry chef", "tax accountant", "interior designer", "physicist", "statistician")
ALLERGENS = ("peanuts", "shellfish", "gluten", "lactose", "pollen", "cats", "dogs", "dust mites", "penicillin",
             "eggs", "soy", "tree nuts", "bee stings", "latex", "sesame", "strawberries", "wheat", "kiwi", "mustard",
             "celery", "walnuts", "hazelnuts", "almonds", "shrimp", "aspirin", "ibuprofen", "mould", "wasp stings",
             "nickel", "horses", "fish", "feathers", "mangoes", "sulfites")
HOBBIES = ("hiking", "knitting", "gardening", "baking", "cycling", "painting", "swimming", "running", "birdwatching",
           "fishing", "dancing", "surfing", "woodworking", "sailing", "climbing", "rowing", "skating", "sketching")
PET_NAMES = ("Miso", "Biscuit", "Pepper", "Oreo", "Tofu", "Waffles", "Mochi", "Ziggy", "Pumpkin", "Noodle",
             "Pickles", "Nugget", "Sprout", "Peanut", "Pretzel", "Muffin", "Bagel", "Crumpet", "Dumpling",
             "Cinnamon", "Nutmeg", "Marmalade", "Socks", "Whiskers", "Pebble", "Toffee", "Fudge", "Sprinkles")
DATES = tuple(f"{m} {d}" for m in _MONTHS for d in range(1, 29))
DEADLINES = _WEEKDAYS + tuple(f"next {w}" for w in _WEEKDAYS[:5]) + (
    "next week", "next month", "the end of the week", "the end of the month", "the end of the quarter",
    "the end of the year") + tuple(f"{m} {d}" for m in _MONTHS for d in (1, 10, 15, 20, 28))
PAIRS = (("tea", "coffee"), ("cats", "dogs"), ("summer", "winter"), ("the mountains", "the beach"),
         ("books", "films"), ("trains", "planes"), ("mornings", "evenings"), ("showers", "baths"),
         ("pasta", "rice"), ("paper books", "e-books"), ("vinyl", "streaming"), ("board games", "video games"),
         ("sunrise", "sunset"), ("red wine", "white wine"), ("chocolate", "vanilla"), ("pancakes", "waffles"),
         ("apples", "oranges"), ("rain", "snow"), ("podcasts", "audiobooks"), ("jazz", "rock"),
         ("sneakers", "boots"), ("tacos", "burritos"), ("crosswords", "sudoku"), ("sparkling water", "still water"),
         ("window seats", "aisle seats"), ("dark chocolate", "milk chocolate"), ("the city", "the countryside"),
         ("cake", "pie"), ("soup", "salad"), ("comedies", "thrillers"), ("beer", "wine"), ("museums", "concerts"),
         ("spicy food", "mild food"), ("early mornings", "late nights"), ("cotton", "wool"), ("oat milk", "cow's milk"),
         ("green tea", "black tea"), ("trams", "buses"), ("novels", "short stories"), ("lakes", "the sea"))
# Favourite categories whose values are people (singer, author, artist) lose them to [NAME]; numbers are not
# extracted as favourites. Values that are (or start with) first names would be redacted too ("Milan" is a
# name to the redactor, and so is "Daisy" at the start of a sentence).
_NOT_FAVOURITE = {"singer", "author", "artist", "number"}
_REDACTED_VALUES = {"Emma", "Rebecca", "Jane Eyre", "Jolene", "Roxanne", "Amélie", "Hey Jude", "Zelda", "Mario Kart",
                    "Milan", "daisy"}
CATEGORIES = {c: tuple(v for v in pool if v not in _REDACTED_VALUES)
              for c, pool in FAVOURITE_POOLS.items() if c not in _NOT_FAVOURITE}
_AGES = {"user": (23, 64), "pet": (1, 14), "grandmother": (68, 94), "grandfather": (68, 94), "son": (3, 30),
         "daughter": (3, 30)} | dict.fromkeys(
    ("mother", "father", "stepmother", "stepfather", "aunt", "uncle", "godmother", "godfather", "landlady",
     "landlord"), (45, 75))

# ---------------------------------------------------------------------------
# Stating templates, per "<family>/<who>" (who: user, role, pet, item, pair); "/update" ones restate a changed
# value. Slots: {v} value, {V} capitalised, {av} with a/an, {prev} old value ({aprev} with a/an), {r} role,
# {k} pet kind ({ak} with a/an), {i} deadline item, {c} favourite category, {b} the option not preferred. A
# template that starts with {V} must start its sentence (the extractor anchors it there): no "By the way, ".
# ---------------------------------------------------------------------------

STATEMENTS: dict[str, tuple[str, ...]] = {
    "lives_in/user": ("I live in {v}", "we're based in {v}", "my home is in {v}", "I currently live in {v}"),
    "lives_in/role": ("my {r} lives in {v}", "my {r} is based in {v}", "my {r} resides in {v}",
                      "my {r} is living in {v}"),
    "hometown/user": ("I'm originally from {v}", "I grew up in {v}", "I was born and raised in {v}",
                      "my hometown is {v}"),
    "works_at/user": ("I work at {v}", "I work for {v}", "I'm employed at {v}", "my employer is {v}"),
    "works_at/role": ("my {r} works at {v}", "my {r} works for {v}", "my {r} is working at {v}"),
    "job/user": ("I work as {av}", "I'm {av}", "my job title is {v}", "my occupation is {v}"),
    "job/role": ("my {r} is {av}", "my {r} works as {av}", "my {r} works as {av} in the city centre",
                 "my {r} is {av} at a small firm"),
    "birthday/user": ("my birthday is on {v}", "I was born on {v}", "my birthday is {v}"),
    "birthday/role": ("my {r}'s birthday is on {v}", "my {r} was born on {v}", "my {r}'s birthday is {v}"),
    "age/user": ("I'm {v} years old", "I am {v} years old", "I turned {v} this year"),
    "age/role": ("my {r} is {v} years old", "my {r} is {v}", "my {r} is {v} years of age"),
    "age/pet": ("my {k} is {v} years old", "my {k} is {v}", "my {k} is {v} years of age"),
    "favourite/user": ("my favourite {c} is {v}", "my favorite {c} is {v}", "my all-time favourite {c} is {v}",
                       "{V} is my favourite {c}"),
    "favourite/role": ("my {r}'s favourite {c} is {v}", "my {r}'s favorite {c} is {v}",
                       "my {r}'s all-time favourite {c} is {v}"),
    "allergy/user": ("I'm allergic to {v}", "I have an allergy to {v}", "I'm severely allergic to {v}",
                     "I have a mild allergy to {v}"),
    "allergy/role": ("my {r} is allergic to {v}", "my {r} is severely allergic to {v}",
                     "my {r} is really allergic to {v}"),
    "hobby/user": ("my hobby is {v}", "my main hobby is {v}", "I really enjoy {v}", "I love {v}"),
    "pet_name/pet": ("my {k} is called {v}", "my {k}'s name is {v}", "we adopted {ak} named {v}",
                     "I have a little {k} called {v}"),
    "deadline/item": ("my {i} is due by {v}", "I have to finish my {i} by {v}", "the deadline for my {i} is {v}",
                      "my {i} has to be done by {v}"),
    "preference/pair": ("I prefer {v} over {b}", "I prefer {v} to {b}", "I'd rather have {v} than {b}",
                        "I like {v} more than {b}"),
    "lives_in/user/update": ("we moved from {prev} to {v}", "I recently moved to {v}", "I live in {v} now"),
    "lives_in/role/update": ("my {r} has moved to {v}", "my {r} relocated to {v}",
                             "after years in {prev}, my {r} has moved to {v}"),
    "works_at/user/update": ("I started a new job at {v}", "I left {prev} and now I work for {v}",
                             "I work at {v} now"),
    "works_at/role/update": ("my {r} works at {v} now", "my {r} is working for {v} these days",
                             "after years at {prev}, my {r} works for {v} now"),
    "job/user/update": ("I work as {av} now", "I'm {av} these days", "I retrained, so I'm {av} now"),
    "job/role/update": ("my {r} is {av} now", "my {r} works as {av} these days",
                        "after years as {aprev}, my {r} is {av} now"),
    "age/user/update": ("I just turned {v}", "I'm {v} years old now", "I turned {v} last week"),
    "age/role/update": ("my {r} is now {v}", "my {r} is now {v} years old", "my {r} is {v} years old now"),
    "age/pet/update": ("my {k} is now {v}", "my {k} is now {v} years old", "my {k} is {v} years old now"),
    "favourite/user/update": ("my favourite {c} is {v} these days", "these days my favourite {c} is {v}",
                              "my favourite {c} is {v} now"),
    "favourite/role/update": ("my {r}'s favourite {c} is {v} these days", "these days my {r}'s favourite {c} is {v}",
                              "my {r}'s favourite {c} is {v} now"),
    "deadline/item/update": ("they extended the deadline, so my {i} is due by {v} now",
                             "the deadline for my {i} is {v} now", "I have to finish my {i} by {v} instead"),
    "preference/pair/update": ("I prefer {v} over {b} these days", "I'd rather have {v} than {b} now",
                               "these days I like {v} more than {b}"),
}
FAMILIES = ("lives_in", "hometown", "works_at", "job", "birthday", "age", "favourite", "allergy", "hobby",
            "pet_name", "deadline", "preference")
# Birthdays, hometowns and pets' names do not change; multi-valued relations add, never replace.
UPDATABLE = frozenset({"lives_in", "works_at", "job", "age", "favourite", "deadline", "preference"}) - MULTI_VALUED
N_UNSTATED = 20

# Chit-chat around a statement; none of it states a fact (checked with every turn).
OPENERS = ("Long week at last.", "Quick break between meetings.", "Rainy morning here.", "Finally some sunshine.",
           "Just got back from a walk.", "Coffee number two today.", "Busy day, but a good one.",
           "Not much going on today.", "Traffic was awful this morning.", "The heating is broken again.",
           "Okay, small thing.", "Back from the supermarket.", "What a day.", "Phew, the week is nearly over.")
CONNECTORS = ("By the way, ", "Oh, and ", "Also, ", "Random fact: ", "For the record, ", "Just so you know, ", "")
CLOSERS = ("Any ideas for dinner?", "Anyway, how are you?", "What should I do this weekend?",
           "Can you suggest a podcast?", "Anyway, enough about that.", "Not that it matters much.",
           "Just thought I'd mention it.", "What's a good film for tonight?", "Anyway, back to the to-do list.")
SMALL_TALK = ("I think I need a holiday.", "Today felt really long.", "The train was late again.",
              "I should drink more water.", "The plants on the balcony look sad.", "Just had the best sandwich.",
              "I can't decide what to watch tonight.", "The neighbours are having a party again.",
              "It's surprisingly warm for this time of year.", "I finally cleaned the kitchen.",
              "The wifi keeps dropping today.", "I'm trying to read more this month.",
              "That meeting could have been an email.", "I forgot my umbrella, of course.",
              "The bakery downstairs smells amazing.", "I slept badly last night.")
QUESTIONS = ("How do I boil an egg?", "How do I remove a wine stain?", "How do I fix a squeaky door?",
             "How do I center a div in CSS?", "What's the difference between a list and a tuple in Python?",
             "Can you explain compound interest simply?", "How long should I rest after a long run?",
             "What's a good stretch for a stiff neck?", "How do I descale a kettle?", "Why is the sky blue?",
             "How many cups are in a litre?", "Can you write a haiku about autumn?", "What is a Bloom filter?",
             "How do I keep basil alive indoors?", "What's the capital of {city_country}?",
             "Is {city} nice to visit in spring?", "Have you heard anything about {org} lately?",
             "What's the weather usually like in {city} in November?")
CODE = ("Why does this loop never end?\n\nwhile i < 10:\n    print(i)",
        "Can you review this?\n```python\ndef {fn}(xs):\n    return [x * 2 for x in xs]\n```",
        "What does `git rebase -i HEAD~{n}` do exactly?",
        "```js\nconst {fn} = (a, b) => a + b;\n```\nIs this idiomatic?",
        "Why is this slow? SELECT id, total FROM orders WHERE total > {n} ORDER BY total DESC;",
        "This throws a KeyError:\n```python\nconfig = {{}}\nprint(config['{fn}'])\n```")
URLS = ("Is this worth reading? https://example.org/blog/{slug}", "Can you summarise https://example.com/docs/{slug}?",
        "Saving this for later: https://example.net/articles/{slug}")
JSONS = ('Why is "items" empty here? {{"id": {n}, "status": "ok", "items": []}}',
         'Can you pretty-print this: {{"name": "{fn}", "version": "1.{n}.0", "private": true}}')
PII = ("Please send the invoice to {email}.", "Can you draft a polite reply to {email}?",
       "The plumber's number is {phone}, remind me to save it.", "You can reach the front desk on {phone}.",
       "The refund should go to {iban}, is that format right?", "Is {iban} a valid IBAN?",
       "Is {card} one of those test card numbers?", "Forward the receipt to {email} and cc {email2}.")
# Obviously fake PII: example.com addresses, the phone ranges reserved for fiction (UK 07700 900xxx, US
# 555-01xx), the IBAN registry's documentation examples and the card networks' test numbers.
_FAKE_IBANS = ("DE89 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654 32", "NL91 ABNA 0417 1643 00",
               "FR14 2004 1010 0505 0001 3M02 606", "BE68 5390 0754 7034", "CH93 0076 2011 6238 5295 7")
_FAKE_CARDS = ("4111 1111 1111 1111", "5555 5555 5555 4444", "4012 8888 8888 1881")
_HANDLES = ("billing", "hello", "orders", "jdoe", "team.lead", "support", "frontdesk", "noreply")
_FN_NAMES = ("merge_lists", "parse_row", "load_config", "total", "slugify", "chunked", "retry", "flatten")
_SLUGS = ("why-sleep-matters", "intro-to-sourdough", "rust-ownership", "the-four-day-week", "packing-light")
_PII_KINDS = {"email", "phone", "iban", "card"}


# ---------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldFact:
    subject: str  # "user", a role, a pet kind, a deadline item or a preference pair "a|b"
    relation: str
    value: str
    day: int
    statement: str  # the whole user turn that states it (before redaction)
    previous: str | None = None  # the value this one replaces (stated on an earlier day)

    @property
    def key(self) -> tuple[str, str]:
        """The (subject, relation) key, as ``extract_facts`` keys it (``Fact.key``)."""
        return (self.subject.lower(), self.relation)


@dataclass
class Day:
    index: int  # from 1
    turns: list[str]
    facts: list[WorldFact]  # in turn order
    distractors: list[int] = field(default_factory=list)  # indices into turns
    pii: list[int] = field(default_factory=list)  # the distractor turns that hold fake PII


@dataclass
class World:
    seed: int
    days: list[Day]
    unstated: list[tuple[str, str]]  # keys stated nowhere: false-recall probes

    def facts_until(self, day: int) -> dict[tuple[str, str], WorldFact]:
        """The latest fact per key as of the end of ``day`` (its ``.value`` is the current value)."""
        return {f.key: f for d in self.days if d.index <= day for f in d.facts}

    def all_facts(self) -> list[WorldFact]:
        return [f for d in self.days for f in d.facts]

    def updated(self) -> list[WorldFact]:
        """The facts that replace an earlier value."""
        return [f for f in self.all_facts() if f.previous is not None]


def _article(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _who(subject: str, relation: str) -> str:
    """Which template set states a key: user, role, pet, item (deadlines) or pair (preferences)."""
    fam = family(relation)
    if fam in ("pet_name", "deadline", "preference"):
        return {"pet_name": "pet", "deadline": "item", "preference": "pair"}[fam]
    return "user" if subject == "user" else "pet" if subject in PETS else "role"


class _Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.used: dict[str, dict[str, int]] = {}  # relation -> value -> times used
        # family -> the (subject, relation) keys not stated yet; a pet's age opens once the pet is named.
        self.open: dict[str, list[tuple[str, str]]] = {f: [] for f in FAMILIES}
        for subject in ("user", *ROLES):
            for rel in ("lives_in", "works_at", "job", "birthday", "age", "allergy"):
                self.open[rel].append((subject, rel))
            self.open["favourite"] += [(subject, f"favourite_{c}") for c in CATEGORIES]
        self.open["hometown"].append(("user", "hometown"))
        self.open["hobby"].append(("user", "hobby"))
        self.open["pet_name"] = [(k, "pet_name") for k in PETS]
        self.open["deadline"] = [(i, "deadline") for i in ITEMS]
        # a preference's subject is its pair of options, sorted, as extract_facts writes it
        self.open["preference"] = [("|".join(sorted(p, key=str.lower)), "preference") for p in PAIRS]
        self.bag: list[str] = []  # the families of the new facts to come, in order (see plan)

    def reserve_unstated(self, n: int) -> list[tuple[str, str]]:
        """Take ``n`` keys out of play, round-robin over families with many keys (not the user's own)."""
        families = ["lives_in", "works_at", "job", "birthday", "favourite", "allergy", "pet_name", "deadline"]
        out: list[tuple[str, str]] = []
        while len(out) < n:
            fam = families[len(out) % len(families)]
            pool = [s for s in self.open[fam] if s[0] != "user"]
            slot = pool[self.rng.randrange(len(pool))]
            self.open[fam].remove(slot)
            out.append((slot[0].lower(), slot[1]))
        return out

    def draw(self, relation: str, pool: tuple[str, ...], avoid: str | None = None) -> str:
        """The least-used value of ``pool`` for ``relation``: values repeat only when the pool runs out."""
        counts = self.used.setdefault(relation, {})
        options = [v for v in pool if v != avoid]
        low = min(counts.get(v, 0) for v in options)
        value = self.rng.choice([v for v in options if counts.get(v, 0) == low])
        counts[value] = counts.get(value, 0) + 1
        return value

    def value(self, subject: str, relation: str, prev: str | None = None) -> str:
        fam = family(relation)
        if fam == "age":  # an update is a birthday
            who = _who(subject, relation)
            lo, hi = _AGES.get(subject if who == "role" else who, (22, 65))
            return str(int(prev) + 1) if prev else str(self.rng.randint(lo, hi))
        if fam == "preference":
            a, b = subject.split("|")
            return (b if prev.lower() == a.lower() else a) if prev else self.rng.choice((a, b))
        pool = {"lives_in": CITIES, "hometown": CITIES, "works_at": ORGS, "job": JOBS, "birthday": DATES,
                "allergy": ALLERGENS, "hobby": HOBBIES, "pet_name": PET_NAMES, "deadline": DEADLINES}.get(fam)
        if pool is None:
            pool = CATEGORIES[relation.removeprefix("favourite_")]
        return self.draw(relation, pool, avoid=prev)

    def plan(self, total: int) -> None:
        """Spread ``total`` new facts evenly over the families and the days.

        Each family gets an equal share, capped by its number of keys (the user has one hometown), the
        surplus going to the others; favourites, with a key per category and person, take what is left.
        Shuffling the whole world's bag spreads every family over every day instead of exhausting the
        small ones on day 1; one fact of each family comes first, so day 1 covers them all.
        """
        caps = {f: len(self.open[f]) for f in FAMILIES}
        caps["age"] += len(self.open["pet_name"])  # a named pet opens its age
        share = dict.fromkeys(FAMILIES, 0)
        live = [f for f in FAMILIES if caps[f]]
        while total > 0 and live:
            each = max(1, total // len(live))
            for f in list(live):
                take = min(each, caps[f] - share[f], total)
                share[f] += take
                total -= take
                if share[f] == caps[f]:
                    live.remove(f)
        first = [f for f in FAMILIES if share[f]]
        rest = [f for f in FAMILIES for _ in range(share[f] - 1)]
        self.rng.shuffle(first)
        self.rng.shuffle(rest)
        self.bag = (first + rest)[::-1]  # popped from the end

    def new_key(self) -> tuple[str, str]:
        fam = self.bag.pop() if self.bag else None
        if fam is None or not self.open[fam]:  # a pet's age before any pet was named, or the plan ran out
            live = [f for f in FAMILIES if self.open[f]]
            if not live:
                raise ValueError("the world ran out of new keys: ask for fewer facts or days")
            fam = self.rng.choice(live)
        slots = self.open[fam]
        return slots.pop(self.rng.randrange(len(slots)))

    def statement(self, subject: str, relation: str, value: str, prev: str | None) -> tuple[str, str]:
        """(template, the turn stating it inside chit-chat)."""
        fam = family(relation)
        name = f"{fam}/{_who(subject, relation)}" + ("/update" if prev is not None else "")
        template = self.rng.choice(STATEMENTS[name])
        slots = {"v": value, "V": value[:1].upper() + value[1:], "av": _article(value), "prev": prev or "",
                 "aprev": _article(prev or ""), "r": subject, "k": subject, "ak": _article(subject), "i": subject,
                 "c": relation.removeprefix("favourite_")}
        if fam == "preference":
            slots["b"] = next(o for o in subject.split("|") if o.lower() != value.lower())
        sentence = template.format(**slots)
        if not template.startswith("{V}"):
            sentence = self.rng.choice(CONNECTORS) + sentence
        sentence = sentence[:1].upper() + sentence[1:] + "."
        parts = [self.rng.choice(OPENERS) if self.rng.random() < 0.8 else "", sentence,
                 self.rng.choice(CLOSERS) if self.rng.random() < 0.7 else ""]
        return template, " ".join(p for p in parts if p)

    def distractor(self, pii: bool) -> tuple[str, str]:
        """(template, turn): chit-chat that states nothing, with fake PII when ``pii``."""
        rng = self.rng
        if pii:
            template = rng.choice(PII)
        else:
            kind = rng.choices(("talk", "question", "code", "url", "json"), weights=(4, 4, 2, 1, 1))[0]
            template = {"talk": "{talk}", "question": rng.choice(QUESTIONS), "code": rng.choice(CODE),
                        "url": rng.choice(URLS), "json": rng.choice(JSONS)}[kind]
        turn = template.format(
            talk=" ".join(rng.sample(SMALL_TALK, rng.randint(1, 2))), city=rng.choice(CITIES),
            city_country=rng.choice(("Portugal", "Norway", "Peru", "Kenya", "Vietnam", "Canada")),
            org=rng.choice(ORGS[:40]), fn=rng.choice(_FN_NAMES), n=rng.randint(2, 99), slug=rng.choice(_SLUGS),
            email=f"{rng.choice(_HANDLES)}{rng.randint(1, 99)}@example.com",
            email2=f"{rng.choice(_HANDLES)}@example.org",
            phone=rng.choice((f"+44 7700 900{rng.randint(0, 999):03d}", f"+1 202 555 01{rng.randint(0, 99):02d}")),
            iban=rng.choice(_FAKE_IBANS), card=rng.choice(_FAKE_CARDS))
        if rng.random() < 0.3 and not pii:
            turn = f"{rng.choice(OPENERS)} {turn}"
        return template, turn


def _check_statement(fact: WorldFact, template: str) -> None:
    """The turn must pass the redactor untouched and yield exactly the intended fact."""
    red = redact(fact.statement)
    if red.spans:
        raise ValueError(f"statement template {template!r}: the redactor changed {fact.statement!r} "
                         f"to {red.text!r}")
    want = {(fact.key, normalize(fact.value))}
    if fact.relation == "pet_name":  # naming a pet also states its species (name -> kind)
        want.add(((fact.value.lower(), "pet_species"), normalize(fact.subject)))
    got = {(f.key, normalize(f.value)) for f in extract_facts(red.text)}
    if got != want:
        raise ValueError(f"statement template {template!r}: {fact.statement!r} yields {sorted(got)}, "
                         f"expected {sorted(want)}")


def _check_distractor(turn: str, template: str, pii: bool) -> None:
    red = redact(turn)
    found = extract_facts(red.text)
    if found:
        raise ValueError(f"distractor template {template!r}: {turn!r} yields "
                         f"{[(f.subject, f.relation, f.value) for f in found]}")
    if pii and not _PII_KINDS & set(red.counts):
        raise ValueError(f"distractor template {template!r}: the redactor found no PII in {turn!r}")


def generate_world(seed: int = 0, *, facts_per_day: int = 100, days: int = 1, update_share: float = 0.1,
                   distractors_per_fact: float = 1.0, pii_share: float = 0.1) -> World:
    """A deterministic world for ``seed``: ``days`` days of ``facts_per_day`` stated facts each.

    On day 2 and later ``round(update_share * facts_per_day)`` of the day's facts update a single-valued
    fact of an earlier day. Each day holds ``round(distractors_per_fact * facts_per_day)`` distractor turns,
    ``pii_share`` of them with fake PII. Raises ``ValueError`` if a template yields anything but its fact.
    """
    if facts_per_day < 0 or days < 0 or not 0 <= update_share <= 1 or distractors_per_fact < 0 \
            or not 0 <= pii_share <= 1:
        raise ValueError("facts_per_day, days and distractors_per_fact must be >= 0; shares in [0, 1]")
    gen = _Generator(seed)
    unstated = gen.reserve_unstated(N_UNSTATED)
    gen.plan(facts_per_day * days)  # an upper bound: updates take some of the places
    latest: dict[tuple[str, str], WorldFact] = {}
    world_days: list[Day] = []
    for index in range(1, days + 1):
        plan: list[tuple[str, str, str | None]] = []  # (subject, relation, previous value) per fact
        if index > 1:  # latest holds earlier days only, so an update never follows its fact on the same day
            earlier = [f for f in latest.values() if family(f.relation) in UPDATABLE]
            n_updates = min(round(update_share * facts_per_day), len(earlier))
            plan += [(f.subject, f.relation, f.value) for f in gen.rng.sample(earlier, n_updates)]
        while len(plan) < facts_per_day:
            subject, relation = gen.new_key()
            plan.append((subject, relation, None))
            if relation == "pet_name":
                gen.open["age"].append((subject, "age"))
        entries: list[tuple[str, WorldFact | None, bool]] = []  # (turn, its fact, holds PII)
        for subject, relation, prev in plan:
            value = gen.value(subject, relation, prev)
            template, turn = gen.statement(subject, relation, value, prev)
            fact = WorldFact(subject, relation, value, index, turn, prev)
            _check_statement(fact, template)
            entries.append((turn, fact, False))
        n_distractors = round(distractors_per_fact * facts_per_day)
        n_pii = round(pii_share * n_distractors)
        seen = {turn for turn, _, _ in entries}
        for k in range(n_distractors):
            for _ in range(20):  # distinct turns where the pools allow, so a turn's text identifies it
                template, turn = gen.distractor(pii=k < n_pii)
                if turn not in seen:
                    break
            _check_distractor(turn, template, pii=k < n_pii)
            seen.add(turn)
            entries.append((turn, None, k < n_pii))
        gen.rng.shuffle(entries)
        day = Day(index, [turn for turn, _, _ in entries], [f for _, f, _ in entries if f is not None],
                  distractors=[i for i, (_, f, _) in enumerate(entries) if f is None],
                  pii=[i for i, (_, _, pii) in enumerate(entries) if pii])
        world_days.append(day)
        latest.update((f.key, f) for f in day.facts)
    return World(seed, world_days, unstated)
