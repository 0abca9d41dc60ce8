"""The words facts are made of: what the extractor recognises and what distractors are drawn from.

Plain data, no logic. Names with a leading underscore are shared inside the
facts package only (the extractor and the distractors), not offered to callers.
"""

from __future__ import annotations

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
