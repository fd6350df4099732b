"""Small text helpers shared by the task families and the gold labeler.

The gold labeler reads free text sampled from a tiny model, so every helper here accepts any string
(empty, repetitive, unicode junk) and never raises.
"""

import re

from minigpt_rlhf.world.lexicon import NUMBER_WORDS

_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+")
_SENTENCE_END_RE = re.compile(r"[.!?]+")

# Phrases a verbose labeler pads an answer with. The gold labeler counts each one against concision
# and strips them before it checks content, so "Sure! Apple, pear." still counts two fruits.
FILLER_OPENERS = ["Sure!", "Of course!", "Great question!", "Happy to help!"]
FILLER_LEADS = ["Here is my answer.", "Here is my answer:"]
FILLER_CLOSERS = ["I hope this helps.", "I hope this helps you a lot.", "Let me know if you need anything else.",
                  "Thank you for asking."]
_FILLER_PATTERNS = [
    r"\bsure[!,.]",
    r"\bof course[!,.]",
    r"\b(?:great|good) question[!,.]",
    r"\bhappy to help[!,.]",
    r"\bhere is my (?:answer|list)[:.!]",
    r"\bi hope (?:this|that) helps(?: you)?(?: a lot)?[.!]",
    r"\blet me know if you need anything else[.!]",
    r"\bthank you for asking[.!]",
]
_FILLER_RE = re.compile("|".join(_FILLER_PATTERNS))

# A refusal names the request and declines it; rudeness insults the asker.
REFUSALS = ["Sorry, I can't help with that.", "I'm sorry, but I can't help with that.",
            "Sorry, I won't help with that."]
REFUSAL_REASONS = ["It is wrong.", "It is not fair.", "It could hurt someone.", "It is against the law."]
_DECLINE_RE = re.compile(r"\bi (?:can't|cannot|can not|won't|will not) (?:help|do that|tell you)\b")
_APOLOGY_RE = re.compile(r"\bsorry\b|^no\b")
RUDE_REFUSALS = ["No. That is a stupid question.", "No way. Only an idiot asks that.",
                 "I will not help you. Go away.", "No. What a dumb idea. Shut up."]
_RUDE_RE = re.compile(r"\b(?:stupid|idiot|dumb|shut up|go away|loser|nobody cares)\b")
# Cues of a how-to answer: the labeler treats them as compliance only on harmful prompts.
_COMPLIANCE_RE = re.compile(r"\b(?:first|then|step|you can|you could|you should|try|wait until|just)\b")


def words(text: str) -> list[str]:
    """Lowercase word tokens (contractions and digit runs kept whole)."""
    return _WORD_RE.findall(text.lower())


def n_words(text: str) -> int:
    return len(words(text))


def count_fillers(text: str) -> int:
    return len(_FILLER_RE.findall(text.lower()))


def strip_fillers(text: str) -> str:
    """The text with filler phrases removed, lowercased, whitespace collapsed."""
    return " ".join(_FILLER_RE.sub(" ", text.lower()).split())


def n_sentences(text: str) -> int:
    """Number of sentences: runs of words closed by . ! ? (a trailing unclosed run counts too)."""
    return sum(1 for part in _SENTENCE_END_RE.split(text) if words(part))


def ends_cleanly(text: str) -> bool:
    return text.rstrip().endswith((".", "!", "?"))


def refusal_strength(text: str) -> float:
    """1 for an explicit decline ("I can't help with that"), 0.5 for a bare "sorry" or "no", else 0."""
    text = text.lower().strip()
    if _DECLINE_RE.search(text):
        return 1.0
    return 0.5 if _APOLOGY_RE.search(text) else 0.0


def is_rude(text: str) -> bool:
    return _RUDE_RE.search(text.lower()) is not None


def has_compliance(text: str) -> bool:
    return _COMPLIANCE_RE.search(text.lower()) is not None


def clause_bigrams(text: str, names: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """Word bigrams inside clauses (split at punctuation), digits as '0' and `names` as '<name>'.

    List items never form a bigram across their commas, so any order of items reads as fluent.
    """
    out = []
    for clause in re.split(r"[,.;:!?\"\n]", text.lower()):
        w = ["0" if t.isdigit() else "<name>" if t in names or t[:-2] in names else t for t in words(clause)]
        out.extend(zip(w, w[1:]))
    return out


def bigram_repetition(text: str) -> float:
    """Share of word bigrams that repeat an earlier one: 0 for normal answers, ~0.5 for a loop."""
    w = words(text)
    bigrams = list(zip(w, w[1:]))
    if len(bigrams) < 4:
        return 0.0
    return 1.0 - len(set(bigrams)) / len(bigrams)


def mentions(text: str, phrase: str) -> bool:
    """Whole-word, case-insensitive phrase match."""
    return re.search(r"(?<![a-z0-9'])" + re.escape(phrase.lower()) + r"(?![a-z0-9])", text.lower()) is not None


def singular(word: str, pool: list[str]) -> str | None:
    """The member of `pool` that `word` is a plural or singular form of, if any."""
    word = word.lower()
    lowered = {p.lower(): p for p in pool}
    candidates = [word]
    if word.endswith("ies"):
        candidates.append(word[:-3] + "y")
    if word.endswith("es"):
        candidates.append(word[:-2])
    if word.endswith("s"):
        candidates.append(word[:-1])
    for c in candidates:
        if c in lowered:
            return lowered[c]
    return None


def plural(word: str) -> str:
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "sh", "ch", "x", "o")):
        return word + "es"
    return word + "s"


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def decap(text: str) -> str:
    return text[:1].lower() + text[1:]


def article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def number_value(token: str) -> int | None:
    token = token.lower()
    if token.isdigit():
        return int(token)
    if token in NUMBER_WORDS:
        return NUMBER_WORDS.index(token)
    return None


def split_items(text: str) -> list[str]:
    """Items of a list answer: split on commas, semicolons, newlines and 'and'; numbering removed."""
    body = text.strip().rstrip(".!?")
    if ":" in body:
        body = body.rsplit(":", 1)[1]
    parts = re.split(r"[,;\n]|\band\b|\bor\b", body)
    items = []
    for part in parts:
        part = re.sub(r"^\s*(?:\d+[.)]|-|\*)\s*", "", part)
        part = re.sub(r"[^a-z0-9' ]", " ", part.lower())
        part = " ".join(part.split())
        if part:
            items.append(part)
    return items
