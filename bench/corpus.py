"""A deterministic corpus of English sentences, 10–30 words each.

Generated, not downloaded: the same seed gives the same texts on every machine, so runs
compare. Sentences are built from a small grammar (who, did what, to what, how, when) so
the tokenizer sees real words and realistic lengths, not random characters.
"""

from __future__ import annotations

import random

SUBJECTS = [
    "the platform team", "our largest customer", "a new engineer", "the on-call analyst",
    "the recommendation service", "every regional cluster", "the nightly batch job",
    "a curious product manager", "the search backend", "the support desk",
    "a small research group", "the billing pipeline", "the mobile application",
    "an external auditor", "the data science guild", "the security reviewer",
]  # fmt: skip
VERBS = [
    "reviewed", "migrated", "rewrote", "benchmarked", "deployed", "monitored", "rejected",
    "approved", "documented", "simplified", "rolled back", "scaled out", "profiled",
    "archived", "summarised", "questioned", "translated", "retrained", "debugged",
]  # fmt: skip
OBJECTS = [
    "the quarterly revenue report", "a slow database query", "the embedding model",
    "three unreliable integration tests", "the customer onboarding flow",
    "a forgotten configuration file", "the image classification pipeline",
    "the holiday traffic forecast", "an expensive GPU node pool", "the public API",
    "the weekly incident summary", "a sentiment analysis prototype",
    "the shared vector index", "an outdated privacy policy", "the load balancer rules",
]  # fmt: skip
MANNERS = [
    "with surprising care", "in a hurry", "without telling anyone", "after a long debate",
    "using only open source tools", "despite the budget freeze", "as the manual suggested",
    "on a borrowed laptop", "with help from two interns", "for the second time this year",
]  # fmt: skip
TIMES = [
    "before the Monday stand-up", "late on Friday evening", "during the winter outage",
    "right after the product launch", "while the old cluster was draining",
    "ahead of the board meeting", "in the middle of the night", "last spring",
]  # fmt: skip
CLAUSES = [
    "because latency had doubled since the last release",
    "so that nobody would be paged at three in the morning again",
    "although the previous attempt had failed twice",
    "which saved the company a noticeable amount of money",
    "and the results were shared with every team in the building",
    "while customers kept asking for faster answers",
    "since the old approach no longer scaled with the traffic",
]  # fmt: skip


def sentence(rng: random.Random) -> str:
    parts = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)]
    if rng.random() < 0.7:
        parts.append(rng.choice(MANNERS))
    if rng.random() < 0.6:
        parts.append(rng.choice(TIMES))
    if rng.random() < 0.6:
        parts.append(rng.choice(CLAUSES))
    text = " ".join(parts)
    return text[0].upper() + text[1:] + "."


def corpus(size: int = 4096, seed: int = 8) -> list[str]:
    """`size` sentences of 10–30 words; identical for the same size and seed."""
    rng = random.Random(seed)
    texts: list[str] = []
    while len(texts) < size:
        text = sentence(rng)
        if 10 <= len(text.split()) <= 30:
            texts.append(text)
    return texts
