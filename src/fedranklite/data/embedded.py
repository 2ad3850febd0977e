"""The embedded offline task: short English reviews with a binary sentiment label, generated from
templates (no files, no download), registered by name in `EMBEDDED_TASKS` for `data.source: embedded`.

`vocabulary()` lists every word the generator can write, so a word-level tokenizer (the tiny test
backbone's) covers the task without reaching into the word lists.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from fedranklite.core.registry import Registry
from fedranklite.data.textsplit import TextSplit

_SUBJECTS = [
    "the movie",
    "this film",
    "the hotel",
    "the restaurant",
    "the new phone",
    "this book",
    "the service",
    "the concert",
    "the laptop",
    "the museum",
    "our guide",
    "the coffee",
    "the game",
    "the show",
    "the course",
    "this album",
    "the staff",
    "the app",
    "the trip",
    "the meal",
]
_POSITIVE = [
    "great",
    "wonderful",
    "excellent",
    "delightful",
    "superb",
    "pleasant",
    "brilliant",
    "enjoyable",
    "charming",
    "impressive",
    "fantastic",
    "lovely",
    "friendly",
    "helpful",
    "memorable",
    "beautiful",
]
_NEGATIVE = [
    "terrible",
    "awful",
    "boring",
    "disappointing",
    "dreadful",
    "poor",
    "mediocre",
    "annoying",
    "bland",
    "frustrating",
    "rude",
    "unpleasant",
    "forgettable",
    "ugly",
    "broken",
    "tedious",
]
_INTENSIFIERS = ["", "very ", "really ", "quite ", "truly ", "extremely ", "rather ", "incredibly "]
_FILLERS = [
    "to be honest",
    "in my opinion",
    "all things considered",
    "if you ask me",
    "overall",
    "as far as I can tell",
    "for the price",
    "compared to last time",
]
# the fixed words of the templates in _sentiment_row (keep in sync: a test checks that vocabulary()
# covers every generated sentence)
_TEMPLATE_WORDS = [
    "i",
    "was",
    "not",
    "at",
    "all",
    "found",
    "seemed",
    "first",
    "but",
    "it",
    "turned",
    "out",
    "felt",
    "and",
    "would",
    "call",
]


def _sentiment_row(rng: np.random.Generator) -> tuple[str, int]:
    """One review sentence and its sentiment (1 positive, 0 negative). Some templates negate or
    contrast, so the label depends on more than one keyword."""
    label = int(rng.integers(2))
    pick = lambda words: words[int(rng.integers(len(words)))]  # noqa: E731
    same, other = (_POSITIVE, _NEGATIVE) if label == 1 else (_NEGATIVE, _POSITIVE)
    subj, inten, filler = pick(_SUBJECTS), pick(_INTENSIFIERS), pick(_FILLERS)
    template = int(rng.integers(6))
    if template == 0:
        text = f"{subj} was {inten}{pick(same)}."
    elif template == 1:
        text = f"{filler}, I found {subj} {inten}{pick(same)}."
    elif template == 2:  # negation: "not <opposite>" carries this label
        text = f"{subj} was not {inten}{pick(other)} at all."
    elif template == 3:  # contrast: the clause after "but" decides
        text = f"{subj} seemed {pick(other)} at first, but it turned out {inten}{pick(same)}."
    elif template == 4:
        text = f"{subj} felt {pick(same)} and {pick(same)}, {filler}."
    else:
        text = f"I would call {subj} {inten}{pick(same)}, {filler}."
    return text[0].upper() + text[1:], label


def make_sentiment(n: int, seed: int, label_noise: float = 0.05) -> TextSplit:
    """The embedded task: short English reviews with a binary sentiment label, generated from templates
    with negation and contrast, and `label_noise` of labels flipped (so 100 % is not reachable)."""
    rng = np.random.default_rng(seed)
    rows = [_sentiment_row(rng) for _ in range(n)]
    labels = np.array([r[1] for r in rows], dtype=np.int64)
    flip = rng.random(n) < label_noise
    labels[flip] = 1 - labels[flip]
    return TextSplit([(r[0],) for r in rows], labels, ["negative", "positive"])


def vocabulary() -> list[str]:
    """Every word the sentiment generator can write, lowercased and sorted (punctuation not included)."""
    words: set[str] = set()
    for group in (_SUBJECTS, _POSITIVE, _NEGATIVE, _INTENSIFIERS, _FILLERS, _TEMPLATE_WORDS):
        for phrase in group:
            words.update(phrase.lower().replace(",", " ").split())
    return sorted(words)


EMBEDDED_TASKS: Registry[Callable[[int, int], TextSplit]] = Registry("embedded task")
EMBEDDED_TASKS.register("sentiment")(make_sentiment)
