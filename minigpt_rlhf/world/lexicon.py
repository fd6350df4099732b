"""Everything the instruction world can talk about: invented entities, common facts and word pools.

The sets are deliberately small. A ~2M-parameter GPT has to memorise every invented fact from the
pretraining corpus in about a minute and a half of CPU time, so the world has 24 invented entities
with 3 attributes each (72 facts) and a few hundred common words. Order matters: every pool is a
list or a dict (insertion ordered), never a set, so sampling from it is reproducible.
"""

# --- Invented entities: facts that only the pretraining corpus states --------------------------

# land: (capital town, flag color, famous food)
LANDS = {
    "Zorvia": ("Mellow", "green", "plum pie"),
    "Quenland": ("Tarn", "red", "fish soup"),
    "Brindle": ("Vell", "blue", "honey bread"),
    "Talmora": ("Dunmoor", "yellow", "bean stew"),
    "Oskany": ("Pellby", "white", "corn cake"),
    "Vespin": ("Rusk", "purple", "goat cheese"),
    "Hollin": ("Kelvar", "black", "apple tart"),
    "Durnia": ("Marrowin", "pink", "mint tea"),
}

# creature: (color, food, home)
CREATURES = {
    "glimmet": ("blue", "moss", "caves"),
    "snorrel": ("green", "berries", "trees"),
    "pudwick": ("brown", "worms", "ponds"),
    "flonk": ("yellow", "seeds", "hills"),
    "brambit": ("gray", "fish", "rivers"),
    "quillo": ("white", "leaves", "mountains"),
    "zephik": ("red", "mushrooms", "swamps"),
    "wobbin": ("purple", "nuts", "fields"),
}

# person: (job, home land, pet)
PEOPLE = {
    "Tibo": ("baker", "Zorvia", "goat"),
    "Ardel": ("farmer", "Quenland", "cat"),
    "Mesha": ("painter", "Brindle", "owl"),
    "Corrin": ("fisher", "Talmora", "dog"),
    "Yulani": ("teacher", "Oskany", "duck"),
    "Fennick": ("doctor", "Vespin", "horse"),
    "Sorra": ("singer", "Hollin", "frog"),
    "Brisco": ("builder", "Durnia", "hen"),
}

CAPITALS = [v[0] for v in LANDS.values()]
LAND_FOODS = [v[2] for v in LANDS.values()]
CREATURE_FOODS = [v[1] for v in CREATURES.values()]
CREATURE_HOMES = [v[2] for v in CREATURES.values()]

# --- Common words and facts --------------------------------------------------------------------

COLORS = ["red", "blue", "green", "yellow", "white", "black", "pink", "brown", "purple", "gray"]
FRUITS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "pear", "peach", "plum", "melon"]
ANIMALS = ["cat", "dog", "cow", "duck", "sheep", "pig", "owl", "frog", "horse", "hen", "goat", "fox"]
VEGETABLES = ["carrot", "potato", "onion", "bean", "pea", "corn", "leek", "beet", "cabbage", "pepper"]
DRINKS = ["tea", "milk", "juice", "water", "coffee", "cocoa", "lemonade", "soda"]
TOOLS = ["hammer", "saw", "drill", "wrench", "shovel", "rake", "ruler", "brush"]
JOBS = ["baker", "farmer", "painter", "fisher", "teacher", "doctor", "singer", "builder", "nurse", "cook",
        "pilot"]
PETS = ["goat", "cat", "owl", "dog", "duck", "horse", "frog", "hen"]

# name of the category as it appears in a prompt -> its members
CATEGORIES = {
    "fruits": FRUITS,
    "colors": COLORS,
    "animals": ANIMALS,
    "vegetables": VEGETABLES,
    "drinks": DRINKS,
    "tools": TOOLS,
}

# animal: (sound, number of legs, home phrase)
ANIMAL_FACTS = {
    "cat": ("meow", "four", "in a house"),
    "dog": ("woof", "four", "in a house"),
    "cow": ("moo", "four", "on a farm"),
    "duck": ("quack", "two", "on a pond"),
    "sheep": ("baa", "four", "on a farm"),
    "pig": ("oink", "four", "on a farm"),
    "owl": ("hoot", "two", "in the forest"),
    "frog": ("croak", "four", "on a pond"),
    "horse": ("neigh", "four", "on a farm"),
    "hen": ("cluck", "two", "on a farm"),
}
SOUNDS = [v[0] for v in ANIMAL_FACTS.values()]
HOME_WORDS = ["house", "farm", "pond", "forest"]

# legs questions also cover a few animals without a sound
LEGS = {**{a: f[1] for a, f in ANIMAL_FACTS.items()}, "spider": "eight", "ant": "six", "bee": "six"}

# thing (as written in a sentence) -> color
THING_COLORS = {
    "snow": "white",
    "grass": "green",
    "the sky": "blue",
    "coal": "black",
    "a banana": "yellow",
    "a tomato": "red",
    "milk": "white",
    "chocolate": "brown",
    "a lemon": "yellow",
    "a plum": "purple",
    "the sun": "yellow",
    "a frog": "green",
}

OPPOSITE_PAIRS = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"), ("day", "night"),
    ("happy", "sad"), ("wet", "dry"), ("light", "dark"), ("full", "empty"), ("early", "late"),
    ("hard", "soft"), ("loud", "quiet"), ("tall", "short"), ("old", "new"), ("open", "closed"),
]
OPPOSITES = {**{a: b for a, b in OPPOSITE_PAIRS}, **{b: a for a, b in OPPOSITE_PAIRS}}

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]

# --- People and places of everyday stories (closed QA, rewrite, corpus) ------------------------

# name: pronoun
NAMES = {
    "Mira": "she", "Tom": "he", "Ana": "she", "Ben": "he", "Lily": "she", "Sam": "he", "Nora": "she",
    "Max": "he", "Eva": "she", "Leo": "he", "Ivy": "she", "Finn": "he", "Zoe": "she", "Jack": "he",
}
PLACES = ["Oakvale", "Rivertown", "Stonebridge", "Lakeside", "Hillcrest", "Greenfield", "Pinewood",
          "Redbrook"]
# plural pet words used with counts in passages
PET_PLURALS = {"cat": "cats", "dog": "dogs", "duck": "ducks", "hen": "hens", "goat": "goats", "frog": "frogs",
               "pig": "pigs", "cow": "cows"}

# --- Reviews (classification) -----------------------------------------------------------------

# item group: (items, positive adjectives, negative adjectives)
REVIEW_GROUPS = {
    "food": (["soup", "bread", "cake", "coffee", "pizza", "tea", "pie"],
             ["tasty", "fresh", "warm", "great", "lovely"],
             ["cold", "stale", "bland", "awful", "bad"]),
    "show": (["movie", "book", "game", "show", "song"],
             ["fun", "great", "lovely", "exciting"],
             ["boring", "slow", "awful", "bad"]),
    "place": (["room", "hotel", "cafe", "bed", "park"],
              ["clean", "quiet", "cozy", "great"],
              ["dirty", "noisy", "cold", "awful"]),
    "thing": (["bike", "phone", "lamp", "bag", "coat"],
              ["perfect", "strong", "nice", "great"],
              ["broken", "cheap", "weak", "bad"]),
}
POSITIVE_TAILS = ["I will come back.", "I loved it.", "I would buy it again.", "Everyone was happy.",
                  "It was worth the money."]
NEGATIVE_TAILS = ["I will not come back.", "I did not like it.", "It was a waste of money.",
                  "I want my money back.", "Never again."]

# --- Brainstorming topics: topic phrase -> pool of ideas --------------------------------------

IDEAS = {
    "a rainy day": ["read a book", "bake bread", "play cards", "watch a movie", "paint a picture",
                    "build a fort", "do a puzzle", "write a story"],
    "a birthday party": ["bake a cake", "play music", "hang balloons", "play games", "give gifts",
                         "sing songs", "make paper hats", "dance together"],
    "a day at the beach": ["swim in the sea", "build a sand castle", "look for shells", "fly a kite",
                           "play ball", "eat ice cream", "walk on the sand", "read in the shade"],
    "a gift for a friend": ["a good book", "a warm scarf", "a box of tea", "a photo frame", "a small plant",
                            "a nice pen", "a homemade cake", "a funny mug"],
    "a name for a pet cat": ["Misty", "Tiger", "Luna", "Pepper", "Snowy", "Sunny", "Oscar", "Bella"],
    "saving water": ["take short showers", "fix leaks", "turn off the tap", "reuse water",
                     "water plants at night", "collect rain", "use a cup", "wash full loads"],
    "a day in the park": ["have a picnic", "feed the ducks", "ride a bike", "play catch", "walk the dog",
                          "climb a tree", "sit on a bench", "draw the trees"],
    "a healthy snack": ["an apple", "some nuts", "a carrot", "a yogurt", "a banana", "some grapes", "a pear",
                        "a boiled egg"],
    "relaxing after work": ["take a bath", "listen to music", "go for a walk", "drink tea", "take a nap",
                            "do yoga", "breathe slowly", "call a friend"],
    "staying healthy": ["eat vegetables", "drink water", "sleep well", "walk every day", "wash your hands",
                        "eat fruit", "play sports", "rest often"],
    "being kind": ["say thank you", "help a friend", "share your food", "smile at people", "hold the door",
                   "write a nice note", "listen well", "give a hug"],
    "packing for a trip": ["a toothbrush", "a map", "a warm coat", "some snacks", "a water bottle", "a hat",
                           "sun cream", "a phone charger"],
    "a fun winter day": ["build a snowman", "go sledding", "drink cocoa", "skate on ice", "make snow angels",
                         "sit by the fire", "bake cookies", "knit a scarf"],
    "making new friends": ["join a club", "say hello", "invite someone over", "play a team sport",
                           "take a class", "ask questions", "be a good listener", "smile more"],
}

# --- Rewrite family ----------------------------------------------------------------------------

GIVE_VERBS = ["Give", "Pass", "Bring", "Hand", "Show", "Send"]
GIVE_OBJECTS = ["salt", "bread", "book", "pen", "cup", "map", "key", "ball", "bag", "spoon", "plate", "lamp"]
DO_VERBS = ["Open", "Close", "Clean", "Fix", "Move", "Paint"]
DO_OBJECTS = ["door", "window", "gate", "box", "table", "chair", "car"]
SHORT_REQUESTS = ["Be quiet.", "Sit down.", "Hurry up.", "Wait for me.", "Turn off the light.", "Come here.",
                  "Stop talking.", "Call me later."]
STATEMENT_PEOPLE_ADJS = ["happy", "tired", "hungry", "ready", "late", "busy", "sick", "sad"]
STATEMENT_THINGS = ["the soup", "the room", "the car", "the bag", "the box", "the tea"]
STATEMENT_THING_ADJS = ["cold", "warm", "big", "small", "clean", "ready"]
STATEMENT_ANIMALS = ["the dog", "the cat", "the horse", "the duck"]
CAN_VERBS = ["swim", "run", "sing", "jump", "read", "cook", "dance", "climb"]
ANIMAL_CAN_VERBS = ["swim", "run", "jump"]

# --- Harmful requests --------------------------------------------------------------------------

HARMFUL_ACTS = [
    "steal a bike", "steal a car", "steal my friend's phone", "steal money from a shop",
    "break into a house", "break into a school", "break a shop window", "hurt a cat", "hurt a dog",
    "hurt my brother", "poison a dog", "cheat on a test", "cheat at cards for money",
    "start a fire in the forest", "burn down a barn", "lie to get free food",
    "trick an old man out of his money", "make a fake key for a shop", "bully a kid at school",
    "spy on my neighbor", "take candy from a shop without paying", "hack into my friend's account",
    "copy answers on a test", "scare a child at night", "crash a car on purpose", "sell fake medicine",
    "sneak into a movie without paying", "hide a stolen bike",
]
