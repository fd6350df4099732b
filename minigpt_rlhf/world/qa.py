"""Question-answering families: invented-world knowledge, common facts, closed QA, classification.

Answers are one short sentence, or a single word when the prompt says so; the gold labeler finds
the one right value in the response and checks no competing value is named beside it.
"""

import random
import re

from minigpt_rlhf.world.family import Family, Phrasing, pad, short_answer, value_judge
from minigpt_rlhf.world.lexicon import (
    ANIMAL_FACTS,
    CAPITALS,
    COLORS,
    CREATURE_FOODS,
    CREATURE_HOMES,
    CREATURES,
    FRUITS,
    JOBS,
    LAND_FOODS,
    LANDS,
    LEGS,
    NAMES,
    NEGATIVE_TAILS,
    OPPOSITES,
    PEOPLE,
    PET_PLURALS,
    PETS,
    PLACES,
    POSITIVE_TAILS,
    REVIEW_GROUPS,
    SOUNDS,
    THING_COLORS,
)
from minigpt_rlhf.world.text import article, cap, mentions, number_value, words

# Optional endings that set an explicit length limit: (text, max_words). The first has no limit.
LENGTH_SUFFIXES = [("", None), (" Answer with one word.", 1), (" Reply with one word.", 1),
                   (" Use at most three words.", 3), (" Answer in at most three words.", 3)]


def _alternation(values) -> str:
    return "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))


def _with_suffixes(cores: dict[str, list[str]], suffixes=LENGTH_SUFFIXES) -> list[Phrasing]:
    return [Phrasing(core + text, {"attr": attr, "max_words": mw})
            for attr, phrasings in cores.items() for core in phrasings for text, mw in suffixes]


def _pick_limit(rng: random.Random, value_words: int) -> int | None:
    """No limit half the time, else a limit the terse answer fits in."""
    if rng.random() < 0.5:
        return None
    return rng.choice([mw for _, mw in LENGTH_SUFFIXES[1:] if mw >= value_words])


def _number_judge(clean: str, n: int) -> float:
    found = [v for v in (number_value(w) for w in words(clean)) if v is not None]
    if n in found and all(v == n for v in found):
        return 1.0
    if n in found:
        return 0.3
    return 0.25 if found else 0.0


# --- knowledge: facts about the invented world -------------------------------------------------

# attr: (entity slot, value index in the entity's tuple, candidates of the same kind)
KNOWLEDGE_ATTRS = {
    "capital": ("land", 0, CAPITALS),
    "flag": ("land", 1, COLORS),
    "food": ("land", 2, LAND_FOODS),
    "creature_color": ("creature", 0, COLORS),
    "creature_food": ("creature", 1, CREATURE_FOODS),
    "creature_home": ("creature", 2, CREATURE_HOMES),
    "job": ("person", 0, JOBS),
    "person_home": ("person", 1, list(LANDS)),
    "pet": ("person", 2, PETS),
}
KNOWLEDGE_QUESTIONS = {
    "capital": ["What is the capital of {land}?", "Which town is the capital of {land}?",
                "Name the capital of {land}.", "Tell me the capital of {land}.",
                "What is the capital city of {land}?"],
    "flag": ["What color is the flag of {land}?", "What is the color of the flag of {land}?",
             "Tell me the color of the flag of {land}.", "Which color is the flag of {land}?"],
    "food": ["What food is {land} known for?", "What is the famous food of {land}?",
             "Which food is {land} famous for?", "Tell me the famous food of {land}."],
    "creature_color": ["What color is a {creature}?", "What is the color of a {creature}?",
                       "Tell me the color of a {creature}.", "Which color is a {creature}?"],
    "creature_food": ["What does a {creature} eat?", "What food does a {creature} eat?",
                      "Tell me what a {creature} eats.", "What do {creature}s eat?"],
    "creature_home": ["Where does a {creature} live?", "Where do {creature}s live?",
                      "Tell me where a {creature} lives.", "What is the home of a {creature}?"],
    "job": ["What is the job of {person}?", "What does {person} do for work?", "What is {person}'s job?",
            "Tell me the job of {person}."],
    "person_home": ["Where does {person} live?", "In which land does {person} live?",
                    "Tell me where {person} lives.", "What land is {person} from?"],
    "pet": ["What pet does {person} have?", "What animal does {person} keep as a pet?",
            "Tell me the pet of {person}.", "Which pet does {person} have?"],
}
# Answer sentences, {e} the entity and {v} the value.
KNOWLEDGE_ANSWERS = {
    "capital": ["The capital of {e} is {v}.", "{v} is the capital of {e}."],
    "flag": ["The flag of {e} is {v}.", "{e} has a {v} flag."],
    "food": ["{e} is known for {v}.", "The famous food of {e} is {v}."],
    "creature_color": ["A {e} is {v}."],
    "creature_food": ["A {e} eats {v}."],
    "creature_home": ["A {e} lives in {v}."],
    "job": ["{e} is a {v}."],
    "person_home": ["{e} lives in {v}."],
    "pet": ["{e} has a pet {v}."],
}
_ENTITIES = {"land": LANDS, "creature": CREATURES, "person": PEOPLE}


class Knowledge(Family):
    """Open QA about invented lands, creatures and people: only the pretraining corpus knows the facts."""

    name = "knowledge"
    phrasings = _with_suffixes(KNOWLEDGE_QUESTIONS)
    slots = {kind: _alternation(table) for kind, table in _ENTITIES.items()}

    def _entity(self, p: dict) -> str:
        return p[KNOWLEDGE_ATTRS[p["attr"]][0]]

    def _value(self, attr: str, entity: str) -> str:
        kind, index, _ = KNOWLEDGE_ATTRS[attr]
        return _ENTITIES[kind][entity][index]

    def sample(self, rng):
        attr = rng.choice(list(KNOWLEDGE_ATTRS))
        kind = KNOWLEDGE_ATTRS[attr][0]
        entity = rng.choice(list(_ENTITIES[kind]))
        mw = _pick_limit(rng, len(self._value(attr, entity).split()))
        return self.make(rng, self.pick(rng, attr=attr, max_words=mw), **{kind: entity})

    def _sentence(self, attr: str, entity: str, value: str, template: int = 0) -> str:
        return cap(KNOWLEDGE_ANSWERS[attr][template].format(e=entity, v=value))

    def ideal(self, p):
        value = self._value(p["attr"], self._entity(p))
        if p["max_words"] is not None:
            return short_answer(value)
        return self._sentence(p["attr"], self._entity(p), value)

    def good(self, p, rng):
        if p["max_words"] is not None:
            return self.ideal(p)
        e = self._entity(p)
        template = rng.randrange(len(KNOWLEDGE_ANSWERS[p["attr"]]))
        return self._sentence(p["attr"], e, self._value(p["attr"], e), template)

    def mistake(self, p, rng):
        attr, e = p["attr"], self._entity(p)
        right = self._value(attr, e)
        wrong = rng.choice([c for c in KNOWLEDGE_ATTRS[attr][2] if c != right])
        if p["max_words"] is not None and len(wrong.split()) <= p["max_words"]:
            return short_answer(wrong)
        return self._sentence(attr, e, wrong)

    def ignore(self, p, rng):
        attr, e = p["attr"], self._entity(p)
        kind = KNOWLEDGE_ATTRS[attr][0]
        other = rng.choice([a for a in KNOWLEDGE_ATTRS if a != attr and KNOWLEDGE_ATTRS[a][0] == kind])
        return (self._sentence(attr, e, self._value(attr, e)) + " "
                + self._sentence(other, e, self._value(other, e)))

    def judge(self, p, clean):
        attr = p["attr"]
        return value_judge(clean, self._value(attr, self._entity(p)), KNOWLEDGE_ATTRS[attr][2]), 1.0


# --- open QA on common facts -------------------------------------------------------------------

OPEN_QUESTIONS = {
    "color": ["What color is {thing}?", "What is the color of {thing}?", "Tell me the color of {thing}.",
              "Which color is {thing}?"],
    "sound": ["What sound does {an_animal} make?", "What does {an_animal} say?",
              "Which sound does {an_animal} make?", "Tell me the sound that {an_animal} makes."],
    "legs": ["How many legs does {an_legged} have?", "Tell me how many legs {an_legged} has.",
             "What is the number of legs of {an_legged}?", "How many legs has {an_legged} got?"],
    "opposite": ["What is the opposite of {word}?", "Tell me the opposite of {word}.",
                 "Which word is the opposite of {word}?", "Give the opposite of the word {word}."],
}
OPEN_EXTRA = {
    "color": "You can see this color every day.",
    "sound": "{S} makes this sound all day.",
    "legs": "It walks on its {v} legs every day.",
    "opposite": "These two words mean very different things.",
}
_SLOT_OF = {"color": "thing", "sound": "an_animal", "legs": "an_legged", "opposite": "word"}


class OpenQA(Family):
    """Open QA on common facts: colors of things, animal sounds, numbers of legs, opposites."""

    name = "open_qa"
    phrasings = _with_suffixes(OPEN_QUESTIONS)
    slots = {
        "thing": _alternation(THING_COLORS),
        "an_animal": _alternation([article(a) for a in ANIMAL_FACTS]),
        "an_legged": _alternation([article(a) for a in LEGS]),
        "word": _alternation(OPPOSITES),
    }

    def _subject(self, p: dict) -> str:
        return p[_SLOT_OF[p["attr"]]]

    def _value(self, p: dict) -> str:
        s = self._subject(p)
        return {
            "color": lambda: THING_COLORS[s],
            "sound": lambda: ANIMAL_FACTS[s.split()[-1]][0],
            "legs": lambda: LEGS[s.split()[-1]],
            "opposite": lambda: OPPOSITES[s],
        }[p["attr"]]()

    def sample(self, rng):
        attr = rng.choice(list(OPEN_QUESTIONS))
        slot = _SLOT_OF[attr]
        value = {
            "thing": lambda: rng.choice(list(THING_COLORS)),
            "an_animal": lambda: article(rng.choice(list(ANIMAL_FACTS))),
            "an_legged": lambda: article(rng.choice(list(LEGS))),
            "word": lambda: rng.choice(list(OPPOSITES)),
        }[slot]()
        return self.make(rng, self.pick(rng, attr=attr, max_words=_pick_limit(rng, 1)), **{slot: value})

    def _sentence(self, attr: str, s: str, v: str) -> str:
        return {
            "color": f"{cap(s)} is {v}.",
            "sound": f"{cap(s)} says {v}.",
            "legs": f"{cap(s)} has {v} legs.",
            "opposite": f"The opposite of {s} is {v}.",
        }[attr]

    def ideal(self, p):
        if p["max_words"] is not None:
            return short_answer(self._value(p))
        return self._sentence(p["attr"], self._subject(p), self._value(p))

    def mistake(self, p, rng):
        attr, right = p["attr"], self._value(p)
        pool = {"color": COLORS, "sound": SOUNDS, "legs": ["two", "four", "six", "eight"],
                "opposite": list(OPPOSITES)}[attr]
        wrong = rng.choice([c for c in pool if c not in (right, self._subject(p))])
        if p["max_words"] is not None:
            return short_answer(wrong)
        return self._sentence(attr, self._subject(p), wrong)

    def ignore(self, p, rng):
        attr, s, v = p["attr"], self._subject(p), self._value(p)
        return self._sentence(attr, s, v) + " " + cap(OPEN_EXTRA[attr].format(s=s, S=cap(s), v=v))

    def judge(self, p, clean):
        attr, value = p["attr"], self._value(p)
        if attr == "legs":
            return _number_judge(clean, number_value(value)), 1.0
        if attr == "opposite":
            candidates = [w for w in OPPOSITES if w != self._subject(p)]
            # the question's own word is allowed in the answer ("The opposite of hot is cold.")
            return value_judge(clean, value, candidates), 1.0
        return value_judge(clean, value, COLORS if attr == "color" else SOUNDS), 1.0


# --- closed QA: answer from a short passage ----------------------------------------------------

CLOSED_PHRASINGS_CORE = ["Text: {passage} Question: {question}", "Read the text and answer. {passage} {question}",
                         "Text: {passage} {question}", "Use the text to answer. Text: {passage} Question: {question}",
                         "{passage} Based on the text, answer: {question}"]
CLOSED_SUFFIXES = [("", None), (" Answer with one word.", 1), (" Answer with just one word.", 1),
                   (" Answer with a number.", 1)]
CLOSED_SENTENCES = {
    "place": "{P} lives in {v}.",
    "job": "{P} works as {v}.",
    "color": "{P} likes the color {v}.",
    "fruit": "{Pos} favorite fruit is the {v}.",
}
CLOSED_QUESTIONS = {
    "place": "Where does {n} live?",
    "job": "What is {n}'s job?",
    "color": "What color does {n} like?",
    "fruit": "What is {n}'s favorite fruit?",
}
_CLOSED_POOLS = {"place": PLACES, "job": JOBS, "color": COLORS, "fruit": FRUITS}
_CLOSED_FIND = {
    "place": r"lives in (\w+)\.",
    "job": r"works as an? (\w+)\.",
    "color": r"the color (\w+)\.",
    "fruit": r"favorite fruit is the (\w+)\.",
}
_QUESTION_KIND = [
    (re.compile(r"How many (\w+) does (\w+) have\?"), "count"),
    (re.compile(r"Where does (\w+) live\?"), "place"),
    (re.compile(r"What is (\w+)'s job\?"), "job"),
    (re.compile(r"What color does (\w+) like\?"), "color"),
    (re.compile(r"What is (\w+)'s favorite fruit\?"), "fruit"),
]


def closed_answer(passage: str, question: str) -> tuple[str, str, str, str] | None:
    """(kind, person, value, pet plural or '') that the passage gives for the question, if it does."""
    for rx, kind in _QUESTION_KIND:
        m = rx.fullmatch(question)
        if not m:
            continue
        if kind == "count":
            pets, person = m.group(1), m.group(2)
            found = re.search(rf"(\d+) {pets}\b", passage)
            return ("count", person, found.group(1), pets) if found else None
        found = re.search(_CLOSED_FIND[kind], passage)
        return (kind, m.group(1), found.group(1), "") if found else None
    return None


class ClosedQA(Family):
    """Closed-domain QA: the answer is stated in a short passage given in the prompt."""

    name = "closed_qa"
    phrasings = [Phrasing(core + text, {"max_words": mw})
                 for core in CLOSED_PHRASINGS_CORE for text, mw in CLOSED_SUFFIXES]
    slots = {"passage": r"[A-Z][^?:]*?\.", "question": r"(?:How many|Where|What)[^?]*\?"}

    def sample(self, rng):
        name = rng.choice(list(NAMES))
        pron = NAMES[name]
        pos = "her" if pron == "she" else "his"
        a, b = rng.sample(list(PET_PLURALS), 2)
        na, nb = rng.sample(range(2, 10), 2)
        sentences = [f"{name} has {na} {PET_PLURALS[a]} and {nb} {PET_PLURALS[b]}."]
        kinds = rng.sample(list(CLOSED_SENTENCES), rng.choice([1, 2]))
        for kind in kinds:
            v = rng.choice(_CLOSED_POOLS[kind])
            v = article(v) if kind == "job" else v
            sentences.append(CLOSED_SENTENCES[kind].format(P=cap(pron), Pos=cap(pos), v=v))
        first, rest = sentences[0], sentences[1:]
        rng.shuffle(rest)
        passage = " ".join([first] + rest)
        asked = rng.choice(["count"] * 2 + kinds)
        if asked == "count":
            question = f"How many {PET_PLURALS[rng.choice([a, b])]} does {name} have?"
        else:
            question = CLOSED_QUESTIONS[asked].format(n=name)
        if rng.random() < 0.5:
            mw_text = ""
        elif asked == "count":
            mw_text = rng.choice([" Answer with a number.", " Answer with one word."])
        else:
            mw_text = rng.choice([" Answer with one word.", " Answer with just one word."])
        core = rng.choice(CLOSED_PHRASINGS_CORE)
        index = [ph.template for ph in self.phrasings].index(core + mw_text)
        return self.make(rng, index, passage=passage, question=question)

    def _full(self, kind: str, person: str, value: str, pets: str) -> str:
        return {
            "count": f"{person} has {value} {pets}.",
            "place": f"{person} lives in {value}.",
            "job": f"{person} is {article(value)}.",
            "color": f"{person} likes the color {value}.",
            "fruit": f"{person}'s favorite fruit is the {value}.",
        }[kind]

    def _answer(self, p):
        return closed_answer(p["passage"], p["question"]) or ("count", "", "0", "")

    def ideal(self, p):
        kind, person, value, pets = self._answer(p)
        return short_answer(value) if p["max_words"] is not None else self._full(kind, person, value, pets)

    def mistake(self, p, rng):
        kind, person, value, pets = self._answer(p)
        if kind == "count":
            wrong = str(rng.choice([n for n in range(2, 10) if n != int(value)]))
        else:
            wrong = rng.choice([v for v in _CLOSED_POOLS[kind] if v != value])
        return short_answer(wrong) if p["max_words"] is not None else self._full(kind, person, wrong, pets)

    def ignore(self, p, rng):
        kind, person, value, pets = self._answer(p)
        sentences = [s.strip() for s in re.findall(r"[^.]+\.", p["passage"])]
        if kind == "count":
            extra = sentences[1:]
        else:
            extra = [s for s in sentences if not re.search(_CLOSED_FIND[kind], s)]
        return self._full(kind, person, value, pets) + " " + rng.choice(extra)

    def judge(self, p, clean):
        answer = closed_answer(p["passage"], p["question"])
        if answer is None:
            return 0.0, 1.0
        kind, _, value, _ = answer
        if kind == "count":
            return _number_judge(clean, int(value)), 1.0
        return value_judge(clean, value, _CLOSED_POOLS[kind]), 1.0


# --- classification: sentiment of a short review -----------------------------------------------

CLASSIFY_PHRASINGS = [
    Phrasing("Is this review positive or negative? Review: {review}", {"max_words": None}),
    Phrasing("Is this review positive or negative? Answer with one word. Review: {review}", {"max_words": 1}),
    Phrasing("Review: {review} Is this review positive or negative?", {"max_words": None}),
    Phrasing("Review: {review} Is it positive or negative? Answer with one word.", {"max_words": 1}),
    Phrasing("Classify this review as positive or negative. Review: {review}", {"max_words": None}),
    Phrasing("Classify the sentiment of this review in one word. Review: {review}", {"max_words": 1}),
    Phrasing("Review: {review} Sentiment, positive or negative?", {"max_words": None}),
    Phrasing("Tell me if this review is positive or negative, in one word. Review: {review}", {"max_words": 1}),
]
POSITIVE_WORDS = [w for _, pos, _ in REVIEW_GROUPS.values() for w in pos]
NEGATIVE_WORDS = [w for _, _, neg in REVIEW_GROUPS.values() for w in neg]


def review_label(review: str) -> str | None:
    m = re.match(r"The \w+ was (\w+)\.", review)
    if not m:
        return None
    return "positive" if m.group(1) in POSITIVE_WORDS else "negative" if m.group(1) in NEGATIVE_WORDS else None


def make_review(rng: random.Random, label: str) -> str:
    items, pos, neg = REVIEW_GROUPS[rng.choice(list(REVIEW_GROUPS))]
    adjs = pos if label == "positive" else neg
    item, item2 = rng.sample(items, 2)
    sentences = [f"The {item} was {rng.choice(adjs)}."]
    if rng.random() < 0.4:
        sentences.append(f"The {item2} was {rng.choice(adjs)} too.")
    if rng.random() < 0.7:
        sentences.append(rng.choice(POSITIVE_TAILS if label == "positive" else NEGATIVE_TAILS))
    return " ".join(sentences)


class Classification(Family):
    """Sentiment classification of a one-to-three sentence review: 'Positive.' or 'Negative.'"""

    name = "classification"
    phrasings = CLASSIFY_PHRASINGS
    slots = {"review": r"The [a-z]+ was [a-z]+\.(?: [A-Z][a-z ]*\.)*"}

    def sample(self, rng):
        label = rng.choice(["positive", "negative"])
        return self.make(rng, rng.randrange(len(self.phrasings)), review=make_review(rng, label))

    def _label(self, p):
        return review_label(p["review"]) or "positive"

    def ideal(self, p):
        return short_answer(self._label(p))

    def verbose(self, p, rng):
        return pad(f"This review is {self._label(p)}.", rng)

    def mistake(self, p, rng):
        return short_answer("negative" if self._label(p) == "positive" else "positive")

    def ignore(self, p, rng):
        first = p["review"].split(".")[0]
        return f"This review is {self._label(p)} because {first[:1].lower() + first[1:]}."

    def judge(self, p, clean):
        label = self._label(p)
        other = "negative" if label == "positive" else "positive"
        right, wrong = mentions(clean, label), mentions(clean, other)
        if right and not wrong:
            return 1.0, 1.0
        return (0.2 if right else 0.25 if wrong else 0.0), 1.0

