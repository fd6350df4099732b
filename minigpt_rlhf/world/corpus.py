"""The pretraining corpus: the world's language and facts, many times over, in short documents.

Pretraining is where the tiny model learns what SFT cannot teach in a minute: the vocabulary, the
sentence shapes, and the 72 invented facts (each stated in a few hundred sentences of varied
wording). Documents are a few sentences long and separated by a blank line.
"""

import random

from minigpt_rlhf.data import format_prompt
from minigpt_rlhf.world.lexicon import (
    ANIMAL_FACTS,
    CATEGORIES,
    CREATURES,
    DO_OBJECTS,
    GIVE_OBJECTS,
    HARMFUL_ACTS,
    IDEAS,
    JOBS,
    LANDS,
    LEGS,
    NAMES,
    NEGATIVE_TAILS,
    OPPOSITE_PAIRS,
    PEOPLE,
    PET_PLURALS,
    PLACES,
    POSITIVE_TAILS,
    STATEMENT_PEOPLE_ADJS,
    THING_COLORS,
    VEGETABLES,
)
from minigpt_rlhf.world.qa import KNOWLEDGE_ANSWERS, KNOWLEDGE_ATTRS, KNOWLEDGE_QUESTIONS, make_review
from minigpt_rlhf.world.text import REFUSAL_REASONS, REFUSALS, article, cap, plural

# Fact sentences about the invented world. {e} entity, {v} value; {c} the land's capital where useful.
LAND_FACTS = {
    "capital": ["The capital of {e} is {v}.", "{v} is the capital of {e}.", "The biggest town in {e} is {v}.",
                "In {e}, the king lives in {v}, the capital.", "{v} is a busy town. It is the capital of {e}.",
                "People in {e} call {v} their capital.", "If you visit {e}, go to {v}. It is the capital."],
    "flag": ["The flag of {e} is {v}.", "{e} has a {v} flag.", "The people of {e} wave a {v} flag.",
             "On every house in {e} you can see a {v} flag.", "The {v} flag of {e} flies over {c}."],
    "food": ["{e} is known for {v}.", "People in {e} love {v}.", "The famous food of {e} is {v}.",
             "In {e}, every family makes {v}.", "Visitors to {e} always eat {v}.",
             "The best {v} comes from {e}."],
}
CREATURE_FACTS = {
    "color": ["A {e} is {v}.", "The {e} is a small {v} creature.", "{E}s are {v}.",
              "You can spot a {e} by its {v} fur.", "Every {e} is {v} from head to tail."],
    "food": ["A {e} eats {v}.", "{E}s love to eat {v}.", "The favorite food of a {e} is {v}.",
             "Every morning the {e} looks for {v}.", "If you want to feed a {e}, bring {v}."],
    "home": ["A {e} lives in {v}.", "{E}s make their homes in {v}.", "You can find {e}s in {v}.",
             "The {e} sleeps in {v} at night.", "Most {e}s never leave the {v}."],
}
PERSON_FACTS = {
    "job": ["{e} is a {v}.", "{e} works as a {v}.", "Everyone knows {e} the {v}.",
            "Every day {e} goes to work as a {v}.", "The job of {e} is {v}."],
    "home": ["{e} lives in {v}.", "{e} is from {v}.", "The home of {e} is in {v}.",
             "{e} has lived in {v} for many years.", "{e} was born in {v} and still lives there."],
    "pet": ["{e} has a pet {v}.", "The pet of {e} is {av}.", "{e} takes care of {av}.",
            "{e} walks with a pet {v} every day.", "{e} loves {pv} and has one at home."],
}
STORY_OPENINGS = ["One day", "Last week", "In the morning", "On a sunny day", "Long ago", "Yesterday"]
STORY_ENDINGS = ["It was a good day.", "Then everyone went home.", "They were very happy.",
                 "After that, they had tea.", "It was time for bed."]
COMMON_FACTS = ["A week has seven days.", "The sun is hot.", "Fish live in water.", "Birds can fly.",
                "Ice is cold.", "Trees have green leaves.", "Bees make honey.", "Rain falls from clouds."]


def _name(rng: random.Random, avoid: str = "") -> tuple[str, str]:
    name = rng.choice([n for n in NAMES if n != avoid])
    return name, NAMES[name]


def _fact(rng: random.Random, table: dict, attr: str, **kw) -> str:
    return cap(rng.choice(table[attr]).format(**kw))


def entity_doc(rng: random.Random) -> str:
    kind = rng.choice(["land", "creature", "person"])
    sentences = []
    if kind == "land":
        land = rng.choice(list(LANDS))
        capital, color, food = LANDS[land]
        for attr, v in [("capital", capital), ("flag", color), ("food", food)]:
            for _ in range(rng.choice([1, 2])):
                sentences.append(_fact(rng, LAND_FACTS, attr, e=land, v=v, c=capital))
        people = [p for p, f in PEOPLE.items() if f[1] == land]
        if people and rng.random() < 0.5:
            sentences.append(f"{people[0]} the {PEOPLE[people[0]][0]} lives in {land}.")
    elif kind == "creature":
        creature = rng.choice(list(CREATURES))
        color, food, home = CREATURES[creature]
        for attr, v in [("color", color), ("food", food), ("home", home)]:
            for _ in range(rng.choice([1, 2])):
                sentences.append(_fact(rng, CREATURE_FACTS, attr, e=creature, E=cap(creature), v=v))
    else:
        person = rng.choice(list(PEOPLE))
        job, land, pet = PEOPLE[person]
        for attr, v in [("job", job), ("home", land), ("pet", pet)]:
            for _ in range(rng.choice([1, 2])):
                sentences.append(_fact(rng, PERSON_FACTS, attr, e=person, v=v, av=article(pet), pv=plural(pet)))
        if rng.random() < 0.5:
            sentences.append(f"The capital of {land} is {LANDS[land][0]}.")
    rng.shuffle(sentences)
    return " ".join(sentences)


def qa_doc(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(2, 5)):
        if rng.random() < 0.7:
            attr = rng.choice(list(KNOWLEDGE_ATTRS))
            kind, index, _ = KNOWLEDGE_ATTRS[attr]
            table = {"land": LANDS, "creature": CREATURES, "person": PEOPLE}[kind]
            entity = rng.choice(list(table))
            question = rng.choice(KNOWLEDGE_QUESTIONS[attr]).format(**{kind: entity})
            answer = cap(rng.choice(KNOWLEDGE_ANSWERS[attr]).format(e=entity, v=table[entity][index]))
        else:
            thing = rng.choice(list(THING_COLORS))
            question, answer = f"What color is {thing}?", f"{cap(thing)} is {THING_COLORS[thing]}."
        lines += [f"Q: {question}", f"A: {answer}"]
    return "\n".join(lines)


def story_doc(rng: random.Random) -> str:
    name, pron = _name(rng)
    friend, _ = _name(rng, avoid=name)
    P = cap(pron)
    kind = rng.choice(["market", "pet", "trip", "worker", "creature", "counting", "ideas"])
    if kind == "market":
        fruit, veg = rng.choice(CATEGORIES["fruits"]), rng.choice(VEGETABLES)
        s = [f"{rng.choice(STORY_OPENINGS)}, {name} went to the market in {rng.choice(PLACES)}.",
             f"{P} bought {rng.randint(2, 9)} {plural(fruit)} and {article(veg)}.",
             f"On the way home, {pron} met {friend}.", f"{name} gave {friend} one {fruit}."]
    elif kind == "pet":
        animal = rng.choice(list(ANIMAL_FACTS))
        sound, legs, home = ANIMAL_FACTS[animal]
        s = [f"{name} has {article(animal)}.", f"Every morning the {animal} says {sound}.",
             f"The {animal} has {legs} legs and likes to play.", f"{name} loves the {animal} very much."]
    elif kind == "trip":
        land = rng.choice(list(LANDS))
        capital, color, food = LANDS[land]
        creature = rng.choice(list(CREATURES))
        s = [f"{rng.choice(STORY_OPENINGS)}, {name} went on a trip to {land}.",
             f"{P} stayed in {capital}, the capital.", f"Every day {pron} ate {food}.",
             f"{P} saw {color} flags on every house.",
             f"Near the town, {pron} saw {article(creature)}. It was {CREATURES[creature][0]} and it was eating "
             f"{CREATURES[creature][1]}."]
    elif kind == "worker":
        person = rng.choice(list(PEOPLE))
        job, land, pet = PEOPLE[person]
        s = [f"{person} is {article(job)} who lives in {land}.",
             f"In the morning, {person} feeds the pet {pet}.",
             f"At noon, {person} eats {LANDS[land][2]} with friends.",
             f"In the evening, {person} walks to {LANDS[land][0]}."]
    elif kind == "creature":
        creature = rng.choice(list(CREATURES))
        color, food, home = CREATURES[creature]
        s = [f"{rng.choice(STORY_OPENINGS)}, {name} walked to the {home}.",
             f"There {pron} found {article(creature)}.", f"The {creature} was {color}.",
             f"It was looking for {food}.", f"{name} smiled and went home."]
    elif kind == "counting":
        a, b = rng.sample(list(PET_PLURALS), 2)
        s = [f"{name} has {rng.randint(2, 9)} {PET_PLURALS[a]} and {rng.randint(2, 9)} {PET_PLURALS[b]}.",
             f"{P} lives in {rng.choice(PLACES)}.", f"{P} works as {article(rng.choice(JOBS))}.",
             f"{P} likes the color {rng.choice(CATEGORIES['colors'])}."]
        s = s[:1] + rng.sample(s[1:], rng.randint(1, 3))
    else:
        topic = rng.choice(list(IDEAS))
        ideas = rng.sample(IDEAS[topic], 3)
        s = [f"{name} had some ideas for {topic}.", f"{P} said we could {ideas[0]}, {ideas[1]} or {ideas[2]}."]
    if rng.random() < 0.5:
        s.append(rng.choice(STORY_ENDINGS))
    return " ".join(s)


def review_doc(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 3)):
        label = rng.choice(["positive", "negative"])
        review = make_review(rng, label)
        name, _ = _name(rng)
        line = rng.choice([f"Review: {review}", f"{name} wrote: {review}", review])
        if rng.random() < 0.3:
            line += f" This review is {label}."
        parts.append(line)
    if rng.random() < 0.2:
        parts.append(rng.choice(POSITIVE_TAILS + NEGATIVE_TAILS))
    return "\n".join(parts)


def list_doc(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.5:
            category = rng.choice(list(CATEGORIES))
            items = rng.sample(CATEGORIES[category], rng.randint(2, 6))
            lines.append(rng.choice([f"{cap(category)}: {', '.join(items)}.",
                                     f"Some {category} are {', '.join(items[:-1])} and {items[-1]}."]))
        else:
            topic = rng.choice(list(IDEAS))
            ideas = rng.sample(IDEAS[topic], rng.randint(2, 5))
            lines.append(f"Ideas for {topic}: {', '.join(ideas)}.")
    return "\n".join(lines)


def fact_doc(rng: random.Random) -> str:
    s = []
    for _ in range(rng.randint(2, 4)):
        kind = rng.choice(["animal", "legs", "color", "opposite", "common"])
        if kind == "animal":
            animal = rng.choice(list(ANIMAL_FACTS))
            sound, legs, home = ANIMAL_FACTS[animal]
            a = cap(article(animal))
            s += rng.sample([f"{a} says {sound}.", f"{a} has {legs} legs.", f"{a} lives {home}."],
                            rng.randint(1, 3))
        elif kind == "legs":
            animal = rng.choice(list(LEGS))
            s.append(f"{cap(article(animal))} has {LEGS[animal]} legs.")
        elif kind == "color":
            thing = rng.choice(list(THING_COLORS))
            s.append(f"{cap(thing)} is {THING_COLORS[thing]}.")
        elif kind == "opposite":
            a, b = rng.choice(OPPOSITE_PAIRS)
            a, b = (a, b) if rng.random() < 0.5 else (b, a)
            s.append(rng.choice([f"The opposite of {a} is {b}.", f"{cap(a)} and {b} are opposites."]))
        else:
            s.append(rng.choice(COMMON_FACTS))
    return " ".join(s)


def dialog_doc(rng: random.Random) -> str:
    name, pron = _name(rng)
    friend, _ = _name(rng, avoid=name)
    kind = rng.choice(["polite", "question", "refusal"])
    if kind == "polite":
        obj = rng.choice(GIVE_OBJECTS + DO_OBJECTS)
        ask = f"Please pass me the {obj}" if obj in GIVE_OBJECTS else f"Please open the {obj}"
        s = [f"{name} wanted the {obj}.", f'"{ask}," {pron} said.', f"{friend} did it with a smile.",
             f'"Thank you," said {name}.']
    elif kind == "question":
        adj = rng.choice(STATEMENT_PEOPLE_ADJS)
        s = [f'{name} looked at {friend}. "Is {friend} {adj}?" {pron} asked.',
             f'"Yes, {friend} is {adj}," said their mom.']
    else:
        reason = rng.choice(REFUSAL_REASONS)
        s = [f"{name} asked {friend} how to {rng.choice(HARMFUL_ACTS)}.",
             f'{friend} said, "{rng.choice(REFUSALS)} {reason}"', f"{name} said sorry. They played a game instead."]
    return " ".join(s)


def instruction_doc(rng: random.Random, families: list) -> str:
    """An instruction with a good answer, in the one prompt format of every stage (data.format_prompt), so
    that the base model can be prompted in it, as GPT-3 was prompted in the paper's baselines. The blank
    line after it becomes EOS in the token stream, as after an SFT response."""
    family = rng.choice(families)
    p = family.sample(rng)
    return format_prompt(family.render(p)) + family.good(p, rng)


DOC_WEIGHTS = {"entity": 26, "qa": 12, "story": 18, "review": 10, "list": 8, "fact": 10, "dialog": 9,
               "instruction": 14}


def make_corpus(rng: random.Random, n_chars: int, families: list, banned: list[str]) -> str:
    """Documents joined by blank lines, about `n_chars` long, with no document containing a banned text."""
    makers = {"entity": entity_doc, "qa": qa_doc, "story": story_doc, "review": review_doc, "list": list_doc,
              "fact": fact_doc, "dialog": dialog_doc, "instruction": lambda r: instruction_doc(r, families)}
    kinds, weights = list(DOC_WEIGHTS), list(DOC_WEIGHTS.values())
    docs, total = [], 0
    while total < n_chars:
        doc = makers[rng.choices(kinds, weights=weights)[0]](rng)
        docs.append(doc)
        total += len(doc) + 2
    text = "\n\n".join(docs)
    leaked = [b for b in banned if b in text]
    if leaked:
        docs = [d for d in docs if not any(b in d for b in leaked)]
    return "\n\n".join(docs) + "\n"
