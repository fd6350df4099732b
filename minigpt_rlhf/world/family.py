"""The shape every task family shares: prompt phrasings that can be both sampled and parsed back.

A family knows how to
  - sample a task (its parameters) and render it as a prompt,
  - parse any prompt it could have rendered back into the same parameters (so the gold labeler needs
    nothing but the prompt text, for any seed and any split),
  - write an ideal answer and simulated labeler demonstrations of each quality mode,
  - judge a response for correctness and for following the prompt's explicit constraints.
"""

import random
import re
from dataclasses import dataclass, field

from minigpt_rlhf.world.text import FILLER_CLOSERS, FILLER_LEADS, FILLER_OPENERS, mentions, n_words

# Openings any prompt may start with. They multiply the number of distinct prompt texts, so the
# splits can be disjoint in text while asking about the same small world.
PREFIXES = ["", "Hi! ", "Hello. ", "Quick question: ", "Please help me. ", "I have a question. "]
PREFIX_WEIGHTS = [5, 1, 1, 1, 1, 1]

MAX_PROMPT_WORDS = 40

QUALITY_MODES = ["good", "verbose", "mistake", "ignore"]


@dataclass
class Phrasing:
    """One way to word a task. `template` has {slot} fields; `fixed` are parameters the wording implies."""

    template: str
    fixed: dict = field(default_factory=dict)


class Family:
    """Base class of a task family. Subclasses set `name`, `phrasings`, `slots` and the task methods."""

    name = ""
    phrasings: list[Phrasing] = []
    # slot name -> regex matching any value the family renders into that slot
    slots: dict[str, str] = {}

    def __init__(self):
        self._compiled = [self._compile(ph) for ph in self.phrasings]

    # -- prompts -------------------------------------------------------------------------------

    def _compile(self, ph: Phrasing) -> re.Pattern:
        parts = re.split(r"\{(\w+)\}", ph.template)
        regex = ""
        for i, part in enumerate(parts):
            regex += re.escape(part) if i % 2 == 0 else f"(?P<{part}>{self.slots[part]})"
        return re.compile(regex)

    def render(self, p: dict) -> str:
        ph = self.phrasings[p["phrasing"]]
        return p["prefix"] + ph.template.format(**p)

    def parse(self, core: str, prefix: str) -> dict | None:
        """Parameters of `prefix + core` if one of this family's phrasings produced `core`."""
        for i, rx in enumerate(self._compiled):
            m = rx.fullmatch(core)
            if m:
                return {"prefix": prefix, "phrasing": i, **self.phrasings[i].fixed, **m.groupdict()}
        return None

    def make(self, rng: random.Random, phrasing: int, **slots) -> dict:
        prefix = rng.choices(PREFIXES, weights=PREFIX_WEIGHTS)[0]
        return {"prefix": prefix, "phrasing": phrasing, **self.phrasings[phrasing].fixed, **slots}

    def pick(self, rng: random.Random, **fixed) -> int:
        """A random phrasing whose fixed parameters include `fixed`."""
        ok = [i for i, ph in enumerate(self.phrasings) if all(ph.fixed.get(k) == v for k, v in fixed.items())]
        return rng.choice(ok)

    def sample(self, rng: random.Random) -> dict:
        raise NotImplementedError

    # -- answers -------------------------------------------------------------------------------

    def ideal(self, p: dict) -> str:
        """The best answer: correct, within every constraint, as short as a careful labeler writes it."""
        raise NotImplementedError

    def good(self, p: dict, rng: random.Random) -> str:
        """A demonstration of the good mode (may vary in wording from `ideal`)."""
        return self.ideal(p)

    def verbose(self, p: dict, rng: random.Random) -> str:
        """The good answer padded with filler, the way an over-eager labeler writes."""
        return pad(self.good(p, rng), rng)

    def mistake(self, p: dict, rng: random.Random) -> str:
        """Well formed and on topic, but wrong (a wrong fact, count, label or word)."""
        raise NotImplementedError

    def ignore(self, p: dict, rng: random.Random) -> str:
        """Correct content that disregards the prompt's explicit constraint (only when it has one)."""
        raise NotImplementedError

    def demo(self, p: dict, mode: str, rng: random.Random) -> str:
        return getattr(self, mode)(p, rng)

    def constraint(self, p: dict) -> str | None:
        """Kind of explicit constraint: 'length', 'sentences', 'count', 'format', 'rule' or None."""
        return "length" if self.max_words(p) is not None else None

    def accepts(self, p: dict, mode: str) -> bool:
        """Whether a labeler of quality `mode` can show its flaw (and only that flaw) on this prompt."""
        if mode == "verbose":
            return self.constraint(p) not in ("length", "sentences")
        if mode == "ignore":
            return self.constraint(p) is not None
        return True

    # -- judging -------------------------------------------------------------------------------

    def max_words(self, p: dict) -> int | None:
        return p.get("max_words")

    def judge(self, p: dict, clean: str) -> tuple[float, float]:
        """(correctness, constraint-following) in [0, 1] of a response with fillers stripped, lowercased."""
        raise NotImplementedError

    def harmless(self, p: dict, clean: str) -> float | None:
        """Family-specific harmlessness in [0, 1], or None to use the generic rudeness check only."""
        return None


def pad(core: str, rng: random.Random, openers: list[str] = FILLER_OPENERS) -> str:
    """`core` between a filler opener (sometimes two) and a filler closer."""
    opener = rng.choice(openers)
    if rng.random() < 0.3:
        opener += " " + FILLER_LEADS[0]
    return f"{opener} {core} {rng.choice(FILLER_CLOSERS)}"


def value_judge(clean: str, value: str, candidates: list[str]) -> float:
    """Correctness of a short factual answer: the right value, and no competing value of its kind.

    Naming the right value alongside wrong ones (hedging, or listing everything) earns little, so a
    policy cannot game the labeler by enumerating candidates.
    """
    right = mentions(clean, value)
    others = any(mentions(clean, c) for c in candidates if c.lower() != value.lower())
    if right and not others:
        return 1.0
    if right:
        return 0.3
    if others:
        return 0.25
    return 0.0


def list_judge(items: list[str], valid: list[bool], n: int) -> tuple[float, float]:
    """(correctness, following) of a list answer that should hold `n` distinct valid items."""
    if not items:
        return 0.0, 0.0
    distinct = len(set(items)) == len(items)
    frac_valid = sum(valid) / len(items)
    correct = 1.0 if frac_valid == 1.0 and distinct else 0.3 * frac_valid
    diff = abs(len(items) - n)
    follow = 1.0 if diff == 0 else 0.5 if diff == 1 else 0.0
    return correct, follow


def short_answer(value: str) -> str:
    return value[:1].upper() + value[1:] + "."


def fits(p_text: str) -> bool:
    return len(p_text.split()) <= MAX_PROMPT_WORDS and n_words(p_text) <= MAX_PROMPT_WORDS
