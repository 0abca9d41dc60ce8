"""Facts a user states about themselves, and the question templates that teach them.

``extract_facts(text)`` turns a user's (already redacted) statement into
:class:`Fact` records with rules: one small pattern family per relation,
applied sentence by sentence. It is deliberately conservative: a sentence
that is a question, a value that carries a redaction placeholder
(``[NAME]``, ``[EMAIL]``, ...) or a value that does not look like its type
gives no fact. A memory with no fact still reaches the night's dataset by
other means (see :mod:`services.trainer.dataset`).

Relations (``Fact.relation``; ``Fact.subject`` is ``"user"`` or the noun the
user used, e.g. ``"cat"``, ``"sister"``, ``"report"``):

==============  ===============================  ==========================================
relation        subject                          example statement
==============  ===============================  ==========================================
person_name     user, or a role (sister, boss)   "my partner is called Sam"
pet_name        the pet's kind (cat, dog)        "my cat is called Miso", "my dog Rex"
pet_species     the pet's name                   (from the pet-name statements) Miso -> cat
lives_in        user, or a role                  "I live in Berlin", "we moved from X to Y"
hometown        user                             "I'm originally from Porto"
works_at        user, or a role                  "I work at Siemens"
job             user, or a role                  "I work as a nurse", "my sister is a dentist"
birthday        user, or a role                  "my birthday is on March 3"
age             user, a role, or a pet's kind    "I'm 34 years old", "my dog Rex is 3 years old"
favourite_<c>   user, or a role                  "my favourite food is sushi" (c: food, colour, ...)
allergy         user, or a role (multi-valued)   "I'm allergic to peanuts and shellfish"
hobby           user (multi-valued)              "my hobby is climbing", "I enjoy knitting"
preference      "<a>|<b>" (the pair, sorted)     "I prefer tea over coffee"
deadline        the item ("report"), or "work"   "my report is due on Friday"
==============  ===============================  ==========================================

``favourite_<c>`` is one template family (:func:`family`) with the category
in the relation name, so "favourite food" and "favourite colour" are
different keys. ``allergy`` and ``hobby`` are multi-valued: a later value
adds to the earlier ones instead of replacing them (the dataset merges
them); every other relation is single-valued and the later statement wins
(``we moved from X to Y`` is just a statement of Y).

Templates: per family three disjoint sets, rendered with the fact's slots:
``TRAIN`` (questions the adapter is trained on), ``HELDOUT`` (questions only
the evaluator asks, never trained on) and ``ANSWERS`` (assistant replies,
each containing the value). Questions are in the user's voice ("What is my
cat called?"), answers in the assistant's ("Your cat is called Miso.").
``distractors()`` draws same-type wrong values (names for names, cities for
cities, dates in the same format for dates, ...) for multiple choice.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

__all__ = [
    "ABSTAIN", "FAMILIES", "FAVOURITE_CATEGORIES", "MULTI_VALUED", "RELATIONS", "TEMPLATES", "Fact",
    "RelationTemplates", "answers", "distractors", "extract_facts", "family", "has_placeholder",
    "questions", "stable_seed",
]

# The abstention an answer to a never-stated fact should give (false recall).
ABSTAIN = "I don't know."


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    value: str
    statement: str  # the (redacted) sentence it came from
    memory_id: str = ""
    seq: int = 0

    @property
    def key(self) -> tuple[str, str]:
        """What a later statement updates: (subject, relation)."""
        return (self.subject.lower(), self.relation)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------

PET_KINDS = ("guinea pig", "goldfish", "kitten", "puppy", "cat", "dog", "rabbit", "bunny", "hamster", "parrot",
             "budgie", "bird", "fish", "turtle", "tortoise", "horse", "pony", "snake", "lizard", "ferret",
             "gecko", "rat", "mouse", "chinchilla", "hedgehog", "cockatiel")
_SPECIES = {"kitten": "cat", "puppy": "dog", "bunny": "rabbit", "budgie": "budgie"}
# Roles that normally name one person. Plural-prone roles (friend, colleague,
# cousin, neighbour) are left out: "my friend X" then "my friend Y" is two
# friends, not an update, and "What is my friend called?" has no one answer.
PERSON_ROLES = ("best friend", "older sister", "younger sister", "little sister", "big sister", "older brother",
                "younger brother", "little brother", "big brother", "sister", "brother", "mother", "mom", "mum",
                "father", "dad", "wife", "husband", "partner", "girlfriend", "boyfriend", "fiancée", "fiancee",
                "fiancé", "fiance", "son", "daughter", "boss", "manager", "grandmother", "grandma", "grandfather",
                "grandpa", "roommate", "flatmate", "therapist", "doctor", "dentist", "landlord", "landlady",
                "stepmother", "stepfather", "twin", "aunt", "uncle", "godmother", "godfather")
_ROLE_CANON = {"mom": "mother", "mum": "mother", "dad": "father", "grandma": "grandmother",
               "grandpa": "grandfather", "fiancee": "fiancée", "fiance": "fiancé"}
DEADLINE_ITEMS = ("tax return", "grant proposal", "code review", "project", "report", "thesis", "dissertation",
                  "essay", "paper", "assignment", "presentation", "taxes", "application", "proposal",
                  "homework", "article", "manuscript", "slides", "submission", "invoice", "review")
FAVOURITE_CATEGORIES = {  # as written -> canonical category
    "food": "food", "dish": "food", "meal": "food", "colour": "colour", "color": "colour", "movie": "movie",
    "film": "movie", "book": "book", "novel": "book", "band": "band", "song": "song", "drink": "drink",
    "sport": "sport", "animal": "animal", "season": "season", "city": "city", "fruit": "fruit",
    "game": "game", "board game": "board game", "video game": "video game", "flower": "flower",
    "number": "number", "dessert": "dessert", "tv show": "show", "show": "show", "series": "show",
    "singer": "singer", "author": "author", "writer": "author", "artist": "artist", "painter": "artist",
    "cuisine": "cuisine", "vegetable": "vegetable", "holiday destination": "holiday destination",
    "country": "country", "composer": "composer", "instrument": "instrument",
}
JOB_NOUNS = ("nurse", "teacher", "engineer", "developer", "programmer", "doctor", "physician", "surgeon",
             "dentist", "lawyer", "attorney", "accountant", "designer", "architect", "chef", "cook", "baker",
             "pharmacist", "scientist", "researcher", "student", "professor", "lecturer", "writer", "journalist",
             "editor", "artist", "musician", "photographer", "electrician", "plumber", "carpenter", "mechanic",
             "pilot", "driver", "firefighter", "officer", "manager", "consultant", "analyst", "librarian",
             "farmer", "veterinarian", "vet", "therapist", "psychologist", "translator", "secretary", "cashier",
             "waiter", "waitress", "barista", "paramedic", "entrepreneur", "economist", "biologist", "chemist",
             "physicist", "mathematician", "statistician", "administrator", "technician", "midwife",
             "physiotherapist", "optician", "tailor", "hairdresser", "butcher", "florist", "banker",
             "salesperson", "recruiter", "clerk", "receptionist", "nanny", "tutor", "coach", "illustrator",
             "animator", "actor", "actress", "dancer", "singer", "composer", "curator", "archivist")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_MONTH_ABBR = {m[:3].lower(): m for m in _MONTHS} | {"sept": "September"}
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_COUNTRIES = ("Italy", "France", "Germany", "Spain", "Portugal", "Poland", "Greece", "Ireland", "Norway",
              "Sweden", "Finland", "Denmark", "Austria", "Switzerland", "Belgium", "the Netherlands",
              "Hungary", "Czechia", "Romania", "Turkey", "Japan", "Korea", "China", "India", "Brazil",
              "Argentina", "Mexico", "Canada", "the United States", "the US", "the USA", "the UK",
              "England", "Scotland", "Wales", "Australia", "New Zealand", "Nigeria", "Kenya", "Egypt",
              "Morocco", "Chile", "Peru", "Colombia", "Vietnam", "Thailand", "Indonesia", "Ukraine", "Croatia")

# ---------------------------------------------------------------------------
# Distractor pools (same type as the gold value)
# ---------------------------------------------------------------------------

POOLS: dict[str, tuple[str, ...]] = {
    "person": ("Anna", "Ben", "Clara", "David", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Karin",
               "Leo", "Maya", "Nina", "Oscar", "Paula", "Rosa", "Samuel", "Tara", "Victor", "Wendy", "Yusuf",
               "Zoe", "Marco", "Lucia", "Tom", "Sara", "Omar", "Julia", "Henrik"),
    "pet": ("Biscuit", "Luna", "Max", "Pepper", "Oreo", "Simba", "Coco", "Bella", "Milo", "Daisy", "Charlie",
            "Nala", "Rocky", "Tofu", "Ginger", "Shadow", "Waffles", "Mochi", "Ziggy", "Pumpkin"),
    "city": ("Berlin", "Paris", "Madrid", "Rome", "Lisbon", "Vienna", "Amsterdam", "Prague", "Dublin",
             "Copenhagen", "Stockholm", "Oslo", "Helsinki", "Warsaw", "Budapest", "Athens", "Brussels",
             "Zurich", "Munich", "Milan", "Barcelona", "London", "Manchester", "Edinburgh", "Toronto", "Boston",
             "Chicago", "Seattle", "Denver", "Austin", "Sydney", "Melbourne", "Tokyo", "Osaka", "Seoul",
             "Singapore", "Lyon", "Hamburg", "Porto", "Krakow"),
    "country": tuple(c for c in _COUNTRIES if not c.startswith("the ")),
    "org": ("Siemens", "Microsoft", "Google", "IKEA", "Spotify", "SAP", "Philips", "Nestlé", "Airbus",
            "Bosch", "Unilever", "Deutsche Bahn", "Lufthansa", "Adidas", "Ericsson", "Nokia"),
    "org_generic": ("a bakery", "a hospital", "a bank", "a law firm", "an insurance company", "a school",
                    "a startup", "a university", "a supermarket", "a design agency", "a hotel",
                    "a car dealership", "a museum", "a bookshop", "a pharmacy", "a restaurant"),
    "job": ("nurse", "teacher", "software engineer", "accountant", "architect", "chef", "graphic designer",
            "lawyer", "pharmacist", "electrician", "journalist", "librarian", "physiotherapist", "data analyst",
            "photographer", "carpenter", "dentist", "translator", "project manager", "veterinarian"),
    "species": ("cat", "dog", "rabbit", "hamster", "parrot", "guinea pig", "turtle", "goldfish", "ferret",
                "horse", "snake", "lizard", "budgie", "tortoise", "gecko"),
    "allergen": ("peanuts", "shellfish", "gluten", "lactose", "pollen", "cats", "dogs", "dust mites",
                 "penicillin", "eggs", "soy", "tree nuts", "bee stings", "latex", "sesame", "strawberries"),
    "hobby": ("hiking", "painting", "playing the guitar", "knitting", "rock climbing", "photography",
              "gardening", "playing chess", "cycling", "baking", "swimming", "running", "birdwatching", "pottery",
              "reading", "yoga", "fishing", "dancing", "surfing", "woodworking"),
    "relative_date": ("tomorrow", "next week", "next month", "the end of the week", "the end of the month",
                      "the end of the year", "next Monday", "next Friday"),
    "weekday": _WEEKDAYS,
    "date": ("March 3", "June 14", "September 22", "January 9", "November 30", "April 18", "July 7",
             "December 12", "February 25", "October 5", "May 27", "August 16"),
}
FAVOURITE_POOLS: dict[str, tuple[str, ...]] = {
    "food": ("sushi", "pizza", "lasagna", "ramen", "tacos", "curry", "paella", "dumplings", "risotto", "pancakes",
             "falafel", "pho"),
    "colour": ("blue", "green", "red", "yellow", "purple", "orange", "black", "white", "pink", "teal", "grey",
               "turquoise"),
    "movie": ("Inception", "The Matrix", "Casablanca", "Jaws", "Up", "Titanic", "Alien", "Spirited Away",
              "The Godfather", "Parasite", "Heat", "Amélie"),
    "book": ("Dune", "Emma", "Beloved", "Ulysses", "Middlemarch", "The Hobbit", "Moby-Dick", "Jane Eyre",
             "Dracula", "Frankenstein", "The Odyssey", "Rebecca"),
    "band": ("Radiohead", "ABBA", "Queen", "Coldplay", "Metallica", "The Beatles", "Daft Punk", "Nirvana",
             "Pink Floyd", "Muse", "Blur", "Oasis"),
    "song": ("Yesterday", "Hallelujah", "Imagine", "Bohemian Rhapsody", "Hey Jude", "Wonderwall", "Vogue",
             "Africa", "Creep", "Roxanne", "Jolene", "Heroes"),
    "drink": ("tea", "coffee", "lemonade", "orange juice", "hot chocolate", "sparkling water", "green tea", "cola",
              "milk", "kombucha", "iced tea", "apple juice"),
    "sport": ("football", "tennis", "basketball", "swimming", "cycling", "rugby", "volleyball", "golf", "skiing",
              "badminton", "baseball", "table tennis"),
    "animal": ("elephant", "otter", "owl", "fox", "dolphin", "penguin", "tiger", "wolf", "giraffe", "koala", "panda",
               "octopus"),
    "season": ("spring", "summer", "autumn", "winter"),
    "city": POOLS["city"],
    "fruit": ("mango", "apple", "banana", "cherry", "kiwi", "pineapple", "peach", "plum", "grape", "strawberry",
              "pear", "watermelon"),
    "game": ("chess", "Tetris", "Monopoly", "Minecraft", "poker", "Scrabble", "Catan", "Go", "Uno", "Mario Kart",
             "backgammon", "Zelda"),
    "board game": ("chess", "Monopoly", "Scrabble", "Catan", "Go", "backgammon", "Carcassonne", "Risk",
                   "Ticket to Ride", "Cluedo"),
    "video game": ("Tetris", "Minecraft", "Zelda", "Mario Kart", "Portal", "Half-Life", "Stardew Valley",
                   "Celeste", "Hades", "Doom"),
    "flower": ("rose", "tulip", "sunflower", "daisy", "lily", "orchid", "peony", "lavender", "iris", "daffodil"),
    "number": ("3", "7", "8", "11", "13", "17", "21", "42", "9", "5"),
    "dessert": ("tiramisu", "cheesecake", "ice cream", "apple pie", "brownies", "crème brûlée", "panna cotta",
                "baklava", "churros", "chocolate cake"),
    "show": ("Friends", "Seinfeld", "The Office", "Breaking Bad", "Lost", "Sherlock", "Succession", "Fleabag",
             "The Wire", "Twin Peaks"),
    "singer": ("Adele", "Beyoncé", "Bob Dylan", "Taylor Swift", "Freddie Mercury", "Björk", "Elvis Presley",
               "Frank Sinatra", "Rihanna", "Prince"),
    "author": ("Jane Austen", "Toni Morrison", "Haruki Murakami", "Leo Tolstoy", "Agatha Christie", "George Orwell",
               "Terry Pratchett", "Virginia Woolf", "Italo Calvino", "Mary Shelley"),
    "artist": ("Frida Kahlo", "Claude Monet", "Vincent van Gogh", "Pablo Picasso", "Rembrandt", "Hokusai",
               "Banksy", "Georgia O'Keeffe", "Paul Klee", "Henri Matisse"),
    "cuisine": ("Italian", "Japanese", "Mexican", "Indian", "Thai", "Greek", "French", "Lebanese", "Ethiopian",
                "Korean"),
    "vegetable": ("broccoli", "carrots", "spinach", "asparagus", "peppers", "zucchini", "potatoes", "leeks",
                  "kale", "beetroot"),
    "holiday destination": POOLS["city"],
    "country": POOLS["country"],
    "composer": ("Bach", "Mozart", "Beethoven", "Chopin", "Debussy", "Vivaldi", "Brahms", "Satie", "Ravel",
                 "Handel"),
    "instrument": ("piano", "guitar", "violin", "cello", "drums", "flute", "saxophone", "trumpet", "harp",
                   "clarinet"),
}
assert set(FAVOURITE_CATEGORIES.values()) <= set(FAVOURITE_POOLS)

# ---------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RelationTemplates:
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    answers: tuple[str, ...]


# Slots (see _slots): {S} subject as asked ("I" / "my sister"), {obj} ("me" /
# "my sister"), {poss} ("my" / "my sister's"), {be} am/is, {do} do/does,
# {Do}, {has} have/has, {s} verb ending ""/"s", {their} my/their, {Y} answer
# subject ("You" / "Your sister"), {Ypos} ("Your" / "Your sister's"), {are}
# are/is, {were} were/was, {have} have/has. Values: {v}, {V} (capitalised),
# {av}/{Av} (with a/an), {age} ("34 years old"), {o} (the other option of
# a preference), {a}/{b} (the options), {k} (pet kind), {n} (pet name),
# {c} (favourite category), {thing}/{ything} ("my report" / "your report").
TEMPLATES: dict[str, RelationTemplates] = {
    "person_name": RelationTemplates(
        train=("What is {poss} name?", "What's {poss} name?", "What {be} {S} called?", "Tell me {poss} name.",
               "Do you know {poss} name?", "What name {do} {S} go by?", "{Poss} name is what?"),
        heldout=("Can you recall what {poss} name is?", "By what name should you address {obj}?",
                 "Which name belongs to {obj}?"),
        answers=("{Ypos} name is {v}.", "{V}.", "{Y} {are} called {v}.")),
    "pet_name": RelationTemplates(
        train=("What is my {k} called?", "What's the name of my {k}?", "What is my {k}'s name?",
               "What did I name my {k}?", "What do I call my {k}?", "Tell me my {k}'s name.",
               "What name does my {k} have?"),
        heldout=("Do you remember what my {k} is called?", "What name did I give my {k}?",
                 "Which name does my {k} answer to?"),
        answers=("Your {k} is called {v}.", "{V}.", "Your {k}'s name is {v}.", "You named your {k} {v}.")),
    "pet_species": RelationTemplates(
        train=("What kind of animal is {n}?", "What species is {n}?", "What type of pet is {n}?",
               "What animal is {n}?", "{n} is what kind of pet?", "Tell me what kind of animal {n} is.",
               "What sort of pet is {n}?"),
        heldout=("Which animal is {n}?", "What kind of creature is {n}?", "Remind me what species my pet {n} is."),
        answers=("{n} is {av}.", "{Av}.", "{n} is your {v}.")),
    "lives_in": RelationTemplates(
        train=("Where {do} {S} live?", "What city {do} {S} live in?", "Where {be} {S} based?",
               "Where {do} {S} live now?", "Tell me where {S} live{s}.", "Which city is {poss} home?",
               "In which town {do} {S} live?"),
        heldout=("What place {do} {S} call home these days?", "Remind me where {S} live{s}.",
                 "Where {do} {S} reside?"),
        answers=("{Y} live{s} in {v}.", "{V}.", "{Y} {are} based in {v}.", "{Ypos} home is in {v}.")),
    "hometown": RelationTemplates(
        train=("Where {be} {S} from?", "Where {do} {S} come from?", "What is {poss} hometown?",
               "Where did {S} grow up?", "Which place {be} {S} originally from?", "What's {poss} home town?",
               "Tell me where {S} grew up."),
        heldout=("Where are {poss} roots?", "Which place did {S} grow up in?", "What town or country {do} {S} hail from?"),
        answers=("{Y} {are} from {v}.", "{V}.", "{Ypos} hometown is {v}.", "{Y} originally come{s} from {v}.")),
    "works_at": RelationTemplates(
        train=("Where {do} {S} work?", "Which company {do} {S} work for?", "Who {do} {S} work for?",
               "Who is {poss} employer?", "Where {be} {S} employed?", "Tell me where {S} work{s}.",
               "What company employs {obj}?"),
        heldout=("At which organisation {do} {S} have a job?", "Who pays {poss} salary?",
                 "Remind me of {poss} workplace."),
        answers=("{Y} work{s} at {v}.", "{V}.", "{Ypos} employer is {v}.", "{Y} {are} employed at {v}.")),
    "job": RelationTemplates(
        train=("What {do} {S} do for a living?", "What is {poss} job?", "What is {poss} profession?",
               "What {do} {S} work as?", "What is {poss} occupation?", "Tell me what {poss} job is.",
               "What line of work {be} {S} in?"),
        heldout=("How {do} {S} earn a living?", "What kind of work {do} {S} do?",
                 "Remind me what {S} {do} professionally."),
        answers=("{Y} work{s} as {av}.", "{Av}.", "{Y} {are} {av}.", "{Y} {are} {av} by profession.")),
    "birthday": RelationTemplates(
        train=("When is {poss} birthday?", "What is {poss} date of birth?", "When was {S} born?",
               "What day is {poss} birthday?", "On what date was {S} born?", "Tell me {poss} birthday.",
               "What's {poss} birth date?"),
        heldout=("When {do} {S} turn a year older?", "When should you wish {obj} a happy birthday?",
                 "Remind me when {poss} birthday falls."),
        answers=("{Ypos} birthday is {v}.", "{V}.", "{Y} {were} born on {v}.", "It's on {v}.")),
    "age": RelationTemplates(
        train=("How old {be} {S}?", "What is {poss} age?", "What age {be} {S}?", "Tell me {poss} age.",
               "What's {poss} current age?", "How old {be} {S} now?", "Do you know how old {S} {be}?"),
        heldout=("Remind me how old {S} {be}.", "Can you recall {poss} age?", "What age {has} {S} reached?"),
        answers=("{Y} {are} {age}.", "{Age}.", "{Ypos} age is {v}.")),
    "favourite": RelationTemplates(
        train=("What is {poss} favourite {c}?", "What's {poss} favorite {c}?", "Which {c} {do} {S} like best?",
               "What {c} {do} {S} love most?", "Tell me {poss} favourite {c}.",
               "What {c} {do} {S} prefer above all others?", "Name {poss} favourite {c}."),
        heldout=("If {S} could pick only one {c}, which would it be?", "Which {c} is {poss} top pick?",
                 "Remind me which {c} {S} like{s} the most."),
        answers=("{Ypos} favourite {c} is {v}.", "{V}.", "{Y} like{s} {v} best.", "{Y} love{s} {v} the most.")),
    "allergy": RelationTemplates(
        train=("What {be} {S} allergic to?", "{Do} {S} have any allergies?", "What allergies {do} {S} have?",
               "What gives {obj} an allergic reaction?", "Tell me what {S} {be} allergic to.",
               "Which allergy {do} {S} have?", "What triggers {poss} allergy?"),
        heldout=("Is there anything {S} {be} allergic to?", "What should you know about {poss} allergies?",
                 "What must {S} avoid due to an allergy?"),
        answers=("{Y} {are} allergic to {v}.", "{V}.", "{Y} {have} an allergy to {v}.")),
    "hobby": RelationTemplates(
        train=("What is {poss} hobby?", "What {do} {S} do in {their} free time?", "What {do} {S} enjoy doing?",
               "What are {poss} hobbies?", "How {do} {S} like to spend {their} spare time?",
               "Tell me about {poss} hobby.", "What pastime {do} {S} enjoy?"),
        heldout=("What activity {do} {S} do for fun?", "What {do} {S} like to do when {S} {be} not working?",
                 "Remind me of {poss} favourite pastime."),
        answers=("{Ypos} hobby is {v}.", "{V}.", "{Y} enjoy{s} {v}.", "{Y} like{s} {v}.")),
    "preference": RelationTemplates(
        train=("Do I prefer {a} or {b}?", "Do I prefer {b} or {a}?", "Which do I like more, {a} or {b}?",
               "Which do I like better: {b} or {a}?", "{A} or {b}: which do I prefer?",
               "What do I prefer, {a} or {b}?", "Would I rather have {b} or {a}?"),
        heldout=("Between {a} and {b}, which is my preference?",
                 "If I had to choose between {b} and {a}, which would I pick?", "Which of {a} and {b} do I favour?"),
        answers=("You prefer {v} over {o}.", "{V}.", "You like {v} more than {o}.", "{V}, not {o}.")),
    "deadline": RelationTemplates(
        train=("When is {thing} due?", "What is the deadline for {thing}?", "By when do I have to finish {thing}?",
               "When do I need to hand in {thing}?", "What's the due date for {thing}?",
               "Tell me when {thing} is due.", "How long do I have until {thing} is due?"),
        heldout=("By which date must {thing} be done?", "Remind me of the deadline for {thing}.",
                 "When must I submit {thing}?"),
        answers=("{Ything} is due by {v}.", "{V}.", "The deadline for {ything} is {v}.",
                 "You have until {v} to finish {ything}.")),
}
FAMILIES = tuple(TEMPLATES)
RELATIONS = FAMILIES  # the relation types; favourite_<c> relations belong to the "favourite" family
MULTI_VALUED = frozenset({"allergy", "hobby"})
_LOWERCASE_FAVOURITES = frozenset({"food", "colour", "drink", "sport", "animal", "season", "fruit", "flower",
                                   "dessert", "vegetable", "instrument"})
# Which relations may have a subject other than the user (templates conjugate for it).
_OTHER_SUBJECT_OK = frozenset({"person_name", "lives_in", "works_at", "job", "birthday", "age", "favourite",
                               "allergy"})


def family(relation: str) -> str:
    """The template family of a relation (``favourite_food`` -> ``favourite``)."""
    return "favourite" if relation.startswith("favourite_") else relation


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _article(value: str) -> str:
    if re.match(r"(?i)(a|an|the)\s", value):
        return value
    return ("an " if re.match(r"(?i)[aeiou]|hour|honest", value) and not re.match(r"(?i)(uni|euro|one)", value)
            else "a ") + value


def _age_phrase(value: str) -> str:
    if value.isdigit():
        return f"{value} year old" if value == "1" else f"{value} years old"
    return f"{value} old"


def _subject_forms(subject: str) -> dict[str, str]:
    if subject == "user":
        return {"S": "I", "obj": "me", "poss": "my", "Poss": "My", "be": "am", "do": "do", "Do": "Do",
                "has": "have", "s": "", "their": "my", "Y": "You", "Ypos": "Your", "are": "are",
                "were": "were", "have": "have"}
    noun = f"my {subject}"
    return {"S": noun, "obj": noun, "poss": f"{noun}'s", "Poss": _cap(f"{noun}'s"), "be": "is", "do": "does",
            "Do": "Does", "has": "has", "s": "s", "their": "their", "Y": f"Your {subject}",
            "Ypos": f"Your {subject}'s", "are": "is", "were": "was", "have": "has"}


def _slots(fact: Fact) -> dict[str, str]:
    fam = family(fact.relation)
    v = fact.value
    slots = {"v": v, "V": _cap(v), "av": _article(v), "Av": _cap(_article(v)), "age": _age_phrase(v),
             "Age": _cap(_age_phrase(v)), "k": fact.subject, "n": fact.subject}
    if fam == "preference":
        a, b = fact.subject.split("|", 1)
        slots.update(a=a, b=b, A=_cap(a), B=_cap(b), o=b if v.lower() == a.lower() else a)
    elif fam == "deadline":
        thing = "my work" if fact.subject in ("work", "deadline") else f"my {fact.subject}"
        slots.update(thing=thing, ything="your" + thing[2:], Ything="Your" + thing[2:])
    else:
        slots.update(_subject_forms(fact.subject if fam not in ("pet_name", "pet_species") else "user"))
    if fam == "favourite":
        slots["c"] = fact.relation.removeprefix("favourite_")
    return slots


def _render(template: str, fact: Fact) -> str:
    text = template.format(**_slots(fact))
    return re.sub(r"\s+", " ", text).strip()


def _unique(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in items:
        key = normalize(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def normalize(text: str) -> str:
    """Comparison key for questions: case, spacing and end punctuation do not matter."""
    return re.sub(r"\s+", " ", re.sub(r"[?.!,;:'\"]", "", text.lower().replace("’", "'"))).strip()


def questions(fact: Fact, kind: str = "train") -> list[str]:
    """The fact's questions of one set (``train`` or ``heldout``), rendered, unique, in template order."""
    templates = TEMPLATES[family(fact.relation)]
    return _unique(_render(t, fact) for t in (templates.train if kind == "train" else templates.heldout))


def answers(fact: Fact) -> list[str]:
    """The fact's answer sentences, each containing the value."""
    return _unique(_render(t, fact) for t in TEMPLATES[family(fact.relation)].answers)


# ---------------------------------------------------------------------------
# Distractors
# ---------------------------------------------------------------------------

_DATE_DAY = re.compile(r"\b(\d{1,2})(st|nd|rd|th)?\b")
_MONTH_WORD = re.compile(r"\b(" + "|".join(_MONTHS) + r")\b")


def stable_seed(*parts: object) -> int:
    """A seed from values, the same in every process (``hash()`` of a str is not)."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def _ordinal(n: int) -> str:
    return "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _date_variants(gold: str, rng: random.Random, k: int) -> list[str]:
    """Wrong dates written like ``gold``: another month, day and/or weekday, same format."""
    weekday_re = re.compile(r"\b(" + "|".join(_WEEKDAYS) + r")\b")
    out: list[str] = []
    for _ in range(k * 10):
        text = gold
        month, day = _MONTH_WORD.search(text), _DATE_DAY.search(text)
        if month and (rng.random() < 0.7 or not day):
            text = text[:month.start()] + rng.choice([m for m in _MONTHS if m != month.group(1)]) + text[month.end():]
        day = _DATE_DAY.search(text)
        if day and (text == gold or rng.random() < 0.5):
            n = rng.randint(1, 28)
            text = text[:day.start()] + f"{n}{_ordinal(n) if day.group(2) else ''}" + text[day.end():]
        weekday = weekday_re.search(text)
        if weekday:  # "Friday at noon" -> "Tuesday at noon"; "Friday 16 May" -> a plausible other pair
            text = text[:weekday.start()] + rng.choice([w for w in _WEEKDAYS if w != weekday.group(1)]) \
                + text[weekday.end():]
        if text.lower() != gold.lower() and text not in out:
            out.append(text)
        if len(out) >= k:
            break
    return out


def _pool_for(fact: Fact) -> tuple[str, ...]:
    fam, v = family(fact.relation), fact.value
    if fam == "person_name":
        return POOLS["person"]
    if fam == "pet_name":
        return POOLS["pet"]
    if fam == "pet_species":
        return POOLS["species"]
    if fam in ("lives_in", "hometown"):
        return POOLS["country"] if v in _COUNTRIES else POOLS["city"]
    if fam == "works_at":
        return POOLS["org_generic"] if re.match(r"(?i)(a|an|the)\s", v) else POOLS["org"]
    if fam == "job":
        return POOLS["job"]
    if fam == "allergy":
        return POOLS["allergen"]
    if fam == "hobby":
        return POOLS["hobby"]
    if fam == "favourite":
        return FAVOURITE_POOLS[fact.relation.removeprefix("favourite_")]
    if fam == "deadline":
        if v in _WEEKDAYS:
            return POOLS["weekday"]
        return POOLS["relative_date"]
    return ()


def distractors(fact: Fact, k: int = 3, seed: int = 0) -> list[str]:
    """``k`` wrong values of the same type as ``fact.value`` (fewer when the type has fewer)."""
    rng = random.Random(stable_seed("distractors", seed, fact.subject, fact.relation, fact.value))
    fam, gold = family(fact.relation), fact.value
    golds = {part.lower() for part in _split_merged(gold)} | {gold.lower()}
    if fam == "preference":
        return [_slots(fact)["o"]]
    if fam == "age":
        n, unit = (int(gold), "") if gold.isdigit() else (int(gold.split()[0]), " " + gold.split(" ", 1)[1])
        near = [x for x in range(max(1, n - 12), n + 13) if x != n]
        return [f"{x}{unit}" for x in rng.sample(near, min(k, len(near)))]
    if fam in ("birthday", "deadline") and (_MONTH_WORD.search(gold) or _DATE_DAY.search(gold)
                                           or re.search(r"\b(" + "|".join(_WEEKDAYS) + r")\b", gold)):
        return _date_variants(gold, rng, k)
    if fam == "birthday":
        return rng.sample(POOLS["date"], k)
    candidates = [c for c in _pool_for(fact) if c.lower() not in golds]
    if fam in MULTI_VALUED and len(golds) > 2:  # a merged "peanuts and shellfish": offer pairs
        parts = len(_split_merged(gold))
        return [_join(rng.sample(candidates, parts)) for _ in range(k)]
    return rng.sample(candidates, min(k, len(candidates)))


def _join(values: list[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _split_merged(value: str) -> list[str]:
    return [p for p in re.split(r",\s*|\s+and\s+", value) if p]


def merge_values(values: list[str]) -> str:
    """Several values of a multi-valued relation as one answer ("peanuts and shellfish")."""
    return _join(list(dict.fromkeys(values)))


# ---------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\[[A-Z_]+\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_ALT = lambda words: "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))  # noqa: E731
_KIND = _ALT(PET_KINDS)
_ROLE = _ALT(PERSON_ROLES)
_ITEM = _ALT(DEADLINE_ITEMS)
_CAT = _ALT(FAVOURITE_CATEGORIES)
_MY = r"(?:my|our)"
_WE = r"(?:I|we)"
_ADV = r"(?:(?:currently|now|still|also|actually|just|recently|finally|really|mostly|originally) )?"
# An optional name (or its placeholder) right after a role: "my sister Anna lives in ..."
_APPOS = r"(?:,? (?:\[[A-Z]+\]|(?-i:[A-Z])[\w'-]+),?)?"
_V = r"(?P<v>[^.,;:!?\n()\"]+?)"
_END = (r"(?=\s*(?:$|[.,;:!?\n()\"]|\s(?:and|but|because|since|so|although|though|while|who|which|where|when|if"
        r"|until|as well|or)\b))")
_VLIST = r"(?P<v>[^.;:!?\n()\"]+?)"
_END_LIST = r"(?=\s*(?:$|[.;:!?\n()\"]|\s(?:but|because|since|so|although|though|while|which|when|if|as well)\b))"
_NAME = r"(?P<n>[^\s.,;:!?()\"]+(?: (?-i:[A-Z])[\w'-]+)?)"
_MONTH_RE = r"(?:" + "|".join(_MONTHS) + r"|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\.?"
_DAY_RE = r"\d{1,2}(?:st|nd|rd|th)?"
_DATE = (rf"(?:(?:the )?{_DAY_RE}(?: of)? {_MONTH_RE}(?:,? \d{{4}})?|{_MONTH_RE} (?:the )?{_DAY_RE}(?:,? \d{{4}})?"
         r"|\d{1,2}[./-]\d{1,2}(?:[./-]\d{2,4})?|\d{4}-\d{2}-\d{2})")
_WEEKDAY_RE = r"(?:" + "|".join(_WEEKDAYS) + r")"
_RELATIVE = (r"(?:(?:next|this) (?:week|month|year|" + _WEEKDAY_RE[3:-1] + r")|(?:the )?end of (?:the|this|next) "
             r"(?:week|month|year|quarter)|tomorrow|today|tonight|the day after tomorrow|(?:in|within) \d+ "
             r"(?:days|weeks)|(?:the )?weekend)")
_WHEN = (rf"(?P<v>(?:(?:{_WEEKDAY_RE},? )?(?:{_DATE})|{_RELATIVE}|{_WEEKDAY_RE}(?: (?:morning|afternoon|evening|night))?)"
         r"(?: at (?:\d{1,2}(?::\d{2})? ?(?:am|pm)?|noon|midnight))?)")
_AGE = r"(?P<v>\d{1,3})(?:\s*(?P<unit>years?|months?|weeks?)(?:\s*old)?|\s*-?\s*years?-old)"

_STOP_NAMES = {"the", "and", "but", "is", "was", "he", "she", "it", "they", "we", "you", "i", "a", "an", "my",
               "his", "her", "their", "our", "your", "who", "that", "this", "just", "also", "really", "very",
               "so", "not", "still", "now", "always", "never", "too", "from", "in", "at", "on", "with"}
_NOT_NAMES = {"American", "British", "English", "German", "French", "Italian", "Spanish", "Dutch", "Polish",
              "Irish", "Scottish", "Swiss", "Swedish", "Danish", "Norwegian", "Greek", "Turkish", "Chinese",
              "Japanese", "Korean", "Indian", "Mexican", "Brazilian", "Canadian", "Australian", "Catholic",
              "Jewish", "Muslim", "Christian", "Buddhist", "Hindu", "Vegan", "Vegetarian", "Sick", "Home",
              "Here", "There", "Retired", "Pregnant", "Happy", "Sad", "Great", "Fine", "Okay", "Ok"}
_NOT_PLACES = {"team", "office", "city", "country", "village", "town", "area", "suburbs", "house", "apartment",
               "flat", "home", "school", "work", "future", "past", "fear", "peace", "hope", "denial", "hiding",
               "bed", "hospital", "love", "debt", "luck", "trouble", "a", "an", "here", "there", "it", "them",
               "the city", "the countryside", "the suburbs", "the same place", "the area", "the office"}
_PRONOUNS = {"i", "me", "myself", "we", "us", "you", "he", "she", "it", "they", "him", "her", "them", "my", "our",
             "his", "their", "its", "home", "nobody", "noone", "anyone", "someone", "everyone", "everything",
             "something", "nothing", "anything", "a living", "free", "myself and", "fun"}
_NOT_GERUNDS = {"being", "thing", "nothing", "something", "anything", "everything", "morning", "evening",
                "during", "spring", "string", "ceiling", "wedding", "pudding", "king", "ring", "wing", "bring",
                "sibling", "darling", "living", "working", "having", "getting", "feeling", "knowing", "seeing",
                "thinking", "trying", "doing", "saying", "using", "talking", "meeting", "building", "sing",
                "sting", "swing", "ding", "bling", "ping", "wearing", "waiting", "hearing", "telling"}
_TRAILING = re.compile(
    r"\s+(?:now|nowadays|currently|these days|at the moment|right now|for now|anymore|again|recently|too|as well"
    r"|full[- ]time|part[- ]time|for (?:a|the|about|over|almost|nearly|\d).*|since .*|with .*|after .*"
    r"|before .*|near .*|last \w+.*|this \w+.*|next \w+.*|in \d{4}.*|\w+ (?:years?|months?|weeks?|days?) ago.*"
    r"|(?:a|one|two|three|four|five|six|seven|eight|nine|ten|\d+) (?:years?|months?|weeks?|days?).*)$",
    re.IGNORECASE)


def has_placeholder(text: str) -> bool:
    return bool(_PLACEHOLDER.search(text))


def _trim(value: str) -> str:
    value = value.strip(" '\"-")
    while True:
        trimmed = _TRAILING.sub("", value).strip(" '\"-")
        if trimmed == value:
            return value
        value = trimmed


def _titlecase_if_lower(value: str) -> str:
    if value != value.lower():
        return value
    small = {"de", "la", "le", "del", "am", "upon", "on", "of", "the", "and", "van", "von", "da", "di"}
    words = value.split()
    return " ".join(w if i and w in small else w[:1].upper() + w[1:] for i, w in enumerate(words))


def _words(value: str) -> list[str]:
    return value.split()


def _clean_name(raw: str, *, strong: bool) -> str | None:
    value = raw.strip(" '\"-")
    if not value or has_placeholder(value) or any(c.isdigit() for c in value):
        return None
    words = _words(value)
    # "Miso and ...": a name's later words are capitalised ([A-Z] in an IGNORECASE pattern is not)
    while len(words) > 1 and not words[-1][:1].isupper():
        words.pop()
    value = " ".join(words)
    if len(words) > 3 or words[0].lower() in _STOP_NAMES or words[0] in _NOT_NAMES:
        return None
    if not all(re.fullmatch(r"[^\W\d_][\w'-]*", w) for w in words):
        return None
    if not value[0].isupper() and not strong:
        return None
    return _titlecase_if_lower(value)


def _clean_place(raw: str) -> str | None:
    value = _trim(raw)
    if not value or has_placeholder(value) or any(c.isdigit() for c in value):
        return None
    low = value.lower()
    words = _words(value)
    if (low in _NOT_PLACES or low in _PRONOUNS or words[0].lower() in _NOT_PLACES or len(words) > 4
            or words[0].lower() in ("a", "an", "my", "our")):
        return None
    if words[0].lower() == "the" and (len(words) < 2 or words[1][:1].islower()):
        return None
    if not all(re.fullmatch(r"[^\W\d_][\w'.-]*", w) for w in words):
        return None
    return _titlecase_if_lower(value)


def _clean_thing(raw: str, max_words: int = 5) -> str | None:
    value = _trim(raw)
    if not value or has_placeholder(value) or value.lower() in _PRONOUNS:
        return None
    words = _words(value)
    if len(words) > max_words or words[0].lower() in ("i", "we", "he", "she", "they", "it", "you", "me", "myself"):
        return None
    if re.match(r"\d", value) and not re.match(r"\d+[A-Za-z]", value):
        return None
    return value


def _clean_job(raw: str, *, need_known: bool) -> str | None:
    value = _clean_thing(raw, 4)
    if value is None:
        return None
    value = re.sub(r"(?i)^(?:a|an|the)\s+", "", value)
    head = value.split()[-1].lower() if value else ""
    if not value or (need_known and head not in JOB_NOUNS):
        return None
    return value if any(c.isupper() for c in value[1:]) else value.lower()


def _split_list(raw: str) -> list[str]:
    """'peanuts, shellfish and cats' -> 3 values; stops at a part that starts a new clause."""
    out = []
    for part in re.split(r",\s*(?:and\s+|or\s+)?|\s+and\s+|\s+or\s+|\s*&\s*", raw):
        part = _trim(part)
        if not part:
            continue
        first = part.split()[0].lower()
        if first in ("i", "i'm", "we", "my", "he", "she", "it", "they", "you", "also", "am", "is", "was"):
            break
        out.append(part)
    return out


def _resolve_relative_day(value: str, ts: float) -> str:
    """'tomorrow' said on a known day becomes that date, so it still means something next week."""
    offsets = {"today": 0, "tonight": 0, "tomorrow": 1, "the day after tomorrow": 2}
    low = value.lower()
    base = next((w for w in sorted(offsets, key=len, reverse=True) if low.startswith(w)), None)
    if base is None or ts <= 0:
        return value
    day = _dt.datetime.fromtimestamp(ts).date() + _dt.timedelta(days=offsets[base])
    rest = value[len(base):]
    return f"{_WEEKDAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]}{rest}"


def _norm_date(value: str) -> str:
    value = value.strip()
    return re.sub(r"\b(Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\b\.?",
                  lambda m: _MONTH_ABBR[m.group(1).lower()[:4] if m.group(1).lower() == "sept" else
                                        m.group(1).lower()[:3]], value, flags=re.IGNORECASE)


def _role(word: str) -> str:
    word = word.lower()
    return _ROLE_CANON.get(word, word)


# Each rule: (compiled pattern, handler(match, sentence, ts) -> iterable of (subject, relation, value)).
_Rule = tuple[re.Pattern[str], object]
_RULES: list[_Rule] = []


def _rule(pattern: str):  # noqa: ANN202
    def register(handler):  # noqa: ANN001, ANN202
        _RULES.append((re.compile(pattern, re.IGNORECASE), handler))
        return handler
    return register


# -- names ------------------------------------------------------------------
@_rule(rf"\b{_MY} (?P<k>{_KIND})(?:'s name is| is called| is named| goes by(?: the name)?) {_NAME}")
def _pet_named(m, _s, _ts):
    yield from _pet(m.group("k"), m.group("n"), strong=True)


@_rule(rf"\b(?:{_WE} (?:have|'ve got|have got|own|adopted|got)|and) an? (?:new |little |young |old )?(?P<k>{_KIND})"
       rf",? (?:called|named) {_NAME}")
def _pet_have(m, _s, _ts):
    yield from _pet(m.group("k"), m.group("n"), strong=True)


@_rule(rf"\b{_MY} (?P<k>{_KIND}),? (?P<n>(?-i:[A-Z])[\w'-]+)\b(?!')")
def _pet_appositive(m, _s, _ts):
    yield from _pet(m.group("k"), m.group("n"), strong=False)


@_rule(rf"^(?P<n>(?-i:[A-Z])[\w'-]+) is {_MY} (?P<k>{_KIND})\b")
def _pet_is_my(m, _s, _ts):
    yield from _pet(m.group("k"), m.group("n"), strong=False)


def _pet(kind: str, raw_name: str, *, strong: bool) -> Iterator[tuple[str, str, str]]:
    if not raw_name[:1].isupper() and not strong:
        return
    name = _clean_name(raw_name.split()[0] if not strong else raw_name, strong=strong)
    if name is None or name.lower() in PET_KINDS:
        return
    kind = kind.lower()
    yield kind, "pet_name", name
    yield name, "pet_species", _SPECIES.get(kind, kind)


@_rule(rf"\b{_MY} (?P<r>{_ROLE})(?:'s name is| is called| is named| goes by(?: the name)?) {_NAME}")
def _person_named(m, _s, _ts):
    name = _clean_name(m.group("n"), strong=True)
    if name:
        yield _role(m.group("r")), "person_name", name


@_rule(rf"\b{_MY} (?P<r>{_ROLE}) is (?P<n>(?-i:[A-Z])[\w'-]+(?: (?-i:[A-Z])[\w'-]+)?)(?=\s*(?:$|[.,;!?]|\s(?:and|but|who)\b))")
def _person_is(m, _s, _ts):
    name = _clean_name(m.group("n"), strong=False)
    if name and m.group("n")[0].isupper():
        yield _role(m.group("r")), "person_name", name


@_rule(rf"\b{_MY} (?P<r>{_ROLE}),? (?P<n>(?-i:[A-Z])[\w'-]+)\b(?!')")
def _person_appositive(m, _s, _ts):
    if m.group("n")[0].isupper() and m.group("n") not in _NOT_NAMES and m.group("n").lower() not in _STOP_NAMES:
        name = _clean_name(m.group("n"), strong=False)
        if name:
            yield _role(m.group("r")), "person_name", name


@_rule(rf"\bmy name is {_NAME}")
@_rule(rf"\bI(?:'m| am) called {_NAME}")
def _user_name(m, _s, _ts):
    name = _clean_name(m.group("n"), strong=True)
    if name:
        yield "user", "person_name", name


@_rule(r"\b(?:please )?call me (?P<n>(?-i:[A-Z])[\w'-]+)\b")
def _user_call_me(m, _s, _ts):
    name = _clean_name(m.group("n"), strong=False)
    if name and m.group("n")[0].isupper():
        yield "user", "person_name", name


# -- places and work ---------------------------------------------------------
@_rule(rf"\b{_WE} {_ADV}(?:live|reside|am living|'m living|are living|'re living) in {_V}{_END}")
@_rule(rf"\b{_WE}(?:'m|'re| am| are) {_ADV}based in {_V}{_END}")
@_rule(rf"\b{_MY} home is (?:now )?in {_V}{_END}")
def _lives(m, _s, _ts):
    place = _clean_place(m.group("v"))
    if place:
        yield "user", "lives_in", place


@_rule(rf"\b{_WE} {_ADV}(?:moved|relocated)(?: (?:back|over|house))?(?: from (?P<old>[^.,;!?\n]+?))? to "
       rf"(?P<v>[^.,;:!?\n()\"]+?)(?=\s*(?:$|[.,;:!?\n()\"]|\s(?:and|but|because|since|so|from|when|where|after|"
       r"for|with|in \d{4}|last|this|a few|two|three)\b))")
def _moved(m, _s, _ts):
    place = _clean_place(m.group("v"))
    if place:
        yield "user", "lives_in", place


@_rule(rf"\b{_MY} (?P<r>{_ROLE}){_APPOS} (?:lives|is living|is based|resides|moved|has moved|relocated) "
       rf"(?:in|to) {_V}{_END}")
def _role_lives(m, _s, _ts):
    place = _clean_place(m.group("v"))
    if place:
        yield _role(m.group("r")), "lives_in", place


@_rule(rf"\bI(?:'m| am) {_ADV}from {_V}{_END}")
@_rule(rf"\bI {_ADV}come from {_V}{_END}")
@_rule(rf"\bI grew up in {_V}{_END}")
@_rule(rf"\bI was born (?:and raised )?in {_V}{_END}")
@_rule(rf"\bmy home ?town is {_V}{_END}")
def _hometown(m, _s, _ts):
    place = _clean_place(m.group("v"))
    if place:
        yield "user", "hometown", place


_NOT_ORGS = {"home", "a living", "myself", "himself", "herself", "themselves", "free", "it", "this", "that",
             "night", "nights", "weekends", "the weekend", "times", "the moment", "least", "the office", "work",
             "my desk", "a desk", "fun", "money", "nothing", "peace", "a distance"}
_ORG_END = (r"(?=\s*(?:$|[.,;:!?\n()\"]|\s(?:and|but|because|since|so|as|in|on|where|when|which|who|for \d|"
            r"for (?:a|the|about|over|almost|nearly)|now|these days|at the moment)\b))")


@_rule(rf"\b(?:{_WE}|and) {_ADV}(?:work|am working|'m working|are working|'re working) (?:at|for) {_V}{_ORG_END}")
@_rule(rf"\bI(?:'m| am) {_ADV}employed (?:at|by) {_V}{_ORG_END}")
@_rule(rf"\bmy employer is {_V}{_ORG_END}")
@_rule(rf"\bI {_ADV}(?:started|began) (?:a new job |my new job |working |a job )?at {_V}{_ORG_END}")
@_rule(rf"\bI work as an? [\w -]+? (?:at|for) {_V}{_ORG_END}")
def _works(m, _s, _ts):
    org = _clean_thing(m.group("v"))
    if org and org.lower() not in _NOT_ORGS:
        yield "user", "works_at", _titlecase_if_lower(org) if len(org.split()) == 1 else org


@_rule(rf"\b{_MY} (?P<r>{_ROLE}){_APPOS} (?:works|is working) (?:at|for) {_V}{_ORG_END}")
def _role_works(m, _s, _ts):
    org = _clean_thing(m.group("v"))
    if org and org.lower() not in _NOT_ORGS:
        yield _role(m.group("r")), "works_at", org


_JOB_END = r"(?=\s*(?:$|[.,;:!?\n()\"]|\s(?:and|but|at|for|in|since|because|so|who|with|now)\b))"


@_rule(rf"\bI {_ADV}(?:work|am working|'m working) as {_V}{_JOB_END}")
@_rule(rf"\bI(?:'m| am) {_ADV}employed as {_V}{_JOB_END}")
@_rule(rf"\bmy (?:job title|profession|occupation) is {_V}{_JOB_END}")
def _job(m, _s, _ts):
    job = _clean_job(m.group("v"), need_known=False)
    if job:
        yield "user", "job", job


@_rule(rf"\bmy job is (?:being )?(?P<v>an? [^.,;:!?\n()\"]+?){_JOB_END}")
@_rule(rf"\bI(?:'m| am) {_ADV}an? (?P<v>[^.,;:!?\n()\"]+?){_JOB_END}")
def _job_known(m, _s, _ts):
    job = _clean_job(m.group("v"), need_known=True)
    if job:
        yield "user", "job", job


@_rule(rf"\b{_MY} (?P<r>{_ROLE}){_APPOS} (?:is|works as) an? (?P<v>[^.,;:!?\n()\"]+?){_JOB_END}")
def _role_job(m, _s, _ts):
    job = _clean_job(m.group("v"), need_known=True)
    if job:
        yield _role(m.group("r")), "job", job


# -- dates and ages ------------------------------------------------------------
@_rule(rf"\b{_MY} (?:(?P<r>{_ROLE})'s )?birthday is (?:on )?(?P<v>{_DATE})")
@_rule(rf"\bI was born on (?P<v>{_DATE})")
@_rule(rf"\b{_MY} (?P<r2>{_ROLE}){_APPOS} was born on (?P<v>{_DATE})")
def _birthday(m, _s, _ts):
    role = m.groupdict().get("r") or m.groupdict().get("r2")
    yield (_role(role) if role else "user"), "birthday", _norm_date(m.group("v"))


@_rule(r"\b(?:it's|it is|today is) my birthday(?: today)?\b")
def _birthday_today(_m, _s, ts):
    if ts > 0:
        day = _dt.datetime.fromtimestamp(ts).date()
        yield "user", "birthday", f"{_MONTHS[day.month - 1]} {day.day}"


@_rule(rf"\bI(?:'m| am) {_AGE}")
@_rule(r"\bI(?:'m| am) (?P<v>\d{1,3})(?=\s*(?:$|[.!]))")
@_rule(r"\bI (?:just )?turned (?P<v>\d{1,3})\b(?! (?:minutes|hours|percent|%))")
def _age(m, _s, _ts):
    unit = (m.groupdict().get("unit") or "years").lower()
    n = int(m.group("v"))
    if unit.startswith("year") and 1 <= n <= 120:
        yield "user", "age", str(n)


@_rule(rf"\b{_MY} (?P<k>{_KIND}|{_ROLE}){_APPOS} is (?:now )?{_AGE}")
@_rule(rf"\b{_MY} (?P<k>{_KIND}|{_ROLE}){_APPOS} is (?:now )?(?P<v>\d{{1,2}})(?=\s*(?:$|[.!]))")
def _other_age(m, _s, _ts):
    subject = _role(m.group("k"))
    n = int(m.group("v"))
    unit = (m.groupdict().get("unit") or "years").lower()
    if not 0 <= n <= 120:
        return
    if unit.startswith("year"):
        yield subject, "age", str(n)
    else:
        yield subject, "age", f"{n} {unit.rstrip('s')}{'s' if n != 1 else ''}"


@_rule(rf"\b(?:{_MY}|the) (?:(?P<i>{_ITEM}) )?deadline(?: for {_MY} (?P<i2>{_ITEM}))? is (?:on |by |at )?{_WHEN}")
@_rule(rf"\b{_MY} (?P<i3>{_ITEM}) is due (?:on |by |at |before )?{_WHEN}")
@_rule(rf"\bI (?:have|need|must|got) to (?:submit|finish|hand in|deliver|complete|send|turn in|file) "
       rf"(?:{_MY}|the) (?P<i4>{_ITEM}) (?:by|before|on|until) {_WHEN}")
@_rule(rf"\b{_MY} (?P<i5>{_ITEM}) (?:has|needs) to be (?:done|finished|submitted|in|handed in) (?:by|on|before) {_WHEN}")
def _deadline(m, _s, ts):
    groups = m.groupdict()
    item = next((groups[g] for g in ("i", "i2", "i3", "i4", "i5") if groups.get(g)), None)
    value = _resolve_relative_day(_norm_date(m.group("v")), ts)
    yield (item.lower() if item else "work"), "deadline", value


# -- likes ---------------------------------------------------------------------
@_rule(rf"\b{_MY} (?:(?P<r>{_ROLE})'s )?(?:all[- ]time |absolute |very )?favou?rite (?P<c>{_CAT}) is {_V}{_END}")
@_rule(rf"^(?P<v2>[\w' -]{{1,40}}?) (?:is|are) {_MY} (?:all[- ]time |absolute )?favou?rite (?P<c2>{_CAT})\b")
def _favourite(m, _s, _ts):
    groups = m.groupdict()
    category = FAVOURITE_CATEGORIES[(groups.get("c") or groups.get("c2")).lower()]
    value = _clean_thing(groups.get("v") or groups.get("v2"), 4)
    if value and category in _LOWERCASE_FAVOURITES and value[1:] == value[1:].lower():
        value = value[:1].lower() + value[1:]  # "Sushi is my favourite food": a sentence start, not a name
    if value and not re.match(r"(?i)(it|that|this|probably|definitely|maybe)\b", value):
        role = groups.get("r")
        yield (_role(role) if role else "user"), f"favourite_{category}", value


@_rule(rf"\bI(?:'m| am) (?:(?:very|severely|highly|deathly|mildly|also|really|quite|super|so) )*allergic to "
       rf"{_VLIST}{_END_LIST}")
@_rule(rf"\bI have an? (?:severe |mild |bad |serious )?allergy to {_VLIST}{_END_LIST}")
def _allergy(m, _s, _ts):
    for value in _split_list(m.group("v")):
        value = _clean_thing(value, 3)
        if value:
            yield "user", "allergy", value


@_rule(r"\bI have an? (?:severe |mild |bad |serious )?(?P<v>[a-z][\w-]*(?: [a-z][\w-]*)?) allergy\b")
def _allergy_noun(m, _s, _ts):
    value = _clean_thing(m.group("v"), 2)
    if value and value.lower() not in ("severe", "mild", "bad", "serious", "food", "slight", "new"):
        yield "user", "allergy", value


@_rule(rf"\b{_MY} (?P<r>{_ROLE}){_APPOS} is (?:(?:very|severely|highly|also|really) )*allergic to {_VLIST}{_END_LIST}")
def _role_allergy(m, _s, _ts):
    for value in _split_list(m.group("v")):
        value = _clean_thing(value, 3)
        if value:
            yield _role(m.group("r")), "allergy", value


@_rule(rf"\bmy (?:favou?rite |main |big )?hobby is {_VLIST}{_END_LIST}")
@_rule(rf"\bmy hobbies (?:are|include) {_VLIST}{_END_LIST}")
def _hobby(m, _s, _ts):
    for value in _split_list(m.group("v")):
        value = _clean_thing(value, 4)
        if value:
            yield "user", "hobby", value.lower() if value[1:] == value[1:].lower() else value


@_rule(r"\bI (?:really |absolutely |just )?(?:enjoy|love) (?P<v>[a-z]+ing(?: [\w']+){0,3}?)(?=\s*(?:$|[.,;!?]|\s(?:and|"
       r"in my|on|when|with|because|every|at|whenever|during|since|for)\b))")
def _hobby_gerund(m, _s, _ts):
    value = m.group("v")
    head = value.split()[0].lower()
    if len(head) >= 5 and head not in _NOT_GERUNDS and not has_placeholder(value):
        yield "user", "hobby", value


_OPT = r"[\w' -]{1,30}?"


@_rule(rf"\bI (?:much |really |definitely |generally |usually |strongly |always |totally )?prefer (?P<a>{_OPT}) "
       rf"(?:over|to|rather than|more than|instead of) (?P<b>{_OPT}){_END}")
@_rule(rf"\bI (?:like|love|enjoy) (?P<a>{_OPT}) (?:much |a lot |way |far )?(?:more|better) than (?P<b>{_OPT}){_END}")
@_rule(rf"\bI(?:'d| would) (?:much )?rather (?:have |drink |eat |play |watch )?(?P<a>{_OPT}) than "
       rf"(?:have |drink |eat |play |watch )?(?P<b>{_OPT}){_END}")
def _preference(m, _s, _ts):
    a = _clean_option(m.group("a"))
    b = _clean_option(m.group("b"))
    if a and b and a.lower() != b.lower():
        first, second = sorted((a, b), key=str.lower)
        yield f"{first}|{second}", "preference", a


def _clean_option(raw: str) -> str | None:
    value = re.split(r"\s(?:in|at|on|during|when|for|because|since|with|most|every)\s", " " + raw.strip() + " ")[0]
    value = _clean_thing(value.strip(), 3)
    if value is None or "|" in value or value.lower() in ("it", "that", "this", "them", "to", "not"):
        return None
    return value


# -- the entry point ---------------------------------------------------------------------------------


def _sentences(text: str) -> list[str]:
    text = text.replace("’", "'").replace("‘", "'")
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def extract_facts(text: str, *, memory_id: str = "", seq: int = 0, ts: float = 0.0) -> list[Fact]:
    """The facts a (redacted) user message states, in the order they are stated.

    Questions ("Do I live in Berlin?") state nothing; values with a redaction
    placeholder are dropped; one (subject, relation, value) appears once.
    ``ts`` (the memory's time) turns "today"/"tomorrow" into dates.
    """
    found: list[tuple[int, int, Fact]] = []
    seen: set[tuple[str, str, str]] = set()
    for index, sentence in enumerate(_sentences(text)):
        if sentence.endswith("?"):
            continue
        for pattern, handler in _RULES:
            for match in pattern.finditer(sentence):
                for subject, relation, value in handler(match, sentence, ts):  # type: ignore[operator]
                    value = value.strip()
                    if not value or has_placeholder(value) or has_placeholder(subject):
                        continue
                    if subject != "user" and family(relation) not in _OTHER_SUBJECT_OK | {
                            "pet_name", "pet_species", "preference", "deadline", "age"}:
                        continue
                    key = (subject.lower(), relation, value.lower())
                    if key in seen:
                        continue
                    seen.add(key)
                    found.append((index, match.start(),
                                  Fact(subject=subject, relation=relation, value=value, statement=sentence,
                                       memory_id=memory_id, seq=seq)))
    found.sort(key=lambda item: (item[0], item[1]))
    return [fact for _, _, fact in found]
