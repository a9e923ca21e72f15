"""The lexical guard of L2: a high cosine is not enough when the words that differ matter.

MiniLM puts "What is the capital of France?" and "... of Germany?" at cosine 0.9+, and a
paraphrase often lower than that, so no threshold alone reaches 97 % precision
(bench/cache_eval). A candidate must also pass two checks on its text:

- the same numbers, and the same capitalised words not at the start of a sentence (names,
  places, products) and quoted strings;
- not a near-copy with one or two content words replaced (France/Germany, refund/discount,
  enable/disable: the replaced words are what the question is about), nor the same content
  words in another order ("5 km to miles" / "5 miles to km");
- the same polarity words (not, no, off, without...) and arithmetic operators.

It costs recall (a synonym swap such as largest/biggest is refused too); the evaluation
reports both, and an exact repeat is L1's job anyway.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+(?:[.,]\d+)*")
_OPERATOR = re.compile(r"(?<=[\s\d])[-+*/=^<>%](?=[\s\d])")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_QUOTED = re.compile(r"[\"“”']([^\"“”']{1,80})[\"“”']")
_SENTENCE_START = re.compile(r"(?:^|[.!?:]\s+)([A-Za-z]+)")
_MAX_SWAP = 2
_STOPWORD_TEXT = """
    a an the of in on at to for from by with about into over under and or but if then so
    is are was were be been being am do does did done doing have has had having can could
    should would will shall may might must i me my mine we us our you your he she it its they
    them their this that these those what which who whom whose when where why how there here
    some any much many more most very just also too not no please tell give show explain
    need want way best good get make let like s t"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


_POLARITY = frozenset({"not", "no", "never", "without", "off", "none", "nothing"})
_SUFFIXES = ("ingly", "ing", "ed", "er", "ly", "ies", "es", "s", "e")


def _norm(word: str) -> str:
    word = word.lower().strip("'-")
    return word[:-2] if word.endswith("'s") else word


def _stem(word: str) -> str:
    """A crude stem, enough to see `bark`, `barks` and `barking` as one word."""
    for suffix in _SUFFIXES:
        if len(word) - len(suffix) >= 3 and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def key_tokens(text: str) -> frozenset[str]:
    """Numbers, quoted strings, polarity words, and capitalised words that do not start a
    sentence (names, places, products)."""
    starts = {m.start(1) for m in _SENTENCE_START.finditer(text)}
    words = list(_WORD.finditer(text))
    names = {
        _norm(m.group())
        for m in words
        if m.group()[0].isupper() and m.start() not in starts and m.group() != "I"
    }
    polarity = {_norm(m.group()) for m in words} & _POLARITY
    numbers = {n.replace(",", "") for n in _NUMBER.findall(text)}
    quoted = {q.strip().lower() for q in _QUOTED.findall(text)}
    operators = {f"op:{o}" for o in _OPERATOR.findall(text)}
    return frozenset(names | polarity | numbers | quoted | operators)


def content_words(text: str) -> list[str]:
    """Stemmed words that carry meaning, in order."""
    words = (_stem(_norm(w)) for w in _WORD.findall(text))
    return [w for w in words if w and w not in _STOPWORDS]


def compatible(query: str, stored: str) -> bool:
    """False when the texts ask about different things despite a high cosine."""
    if key_tokens(query) != key_tokens(stored):
        return False
    mine, theirs = content_words(query), content_words(stored)
    if set(mine) == set(theirs):
        # The same words in another order ("5 km to miles" / "5 miles to km") ask otherwise.
        return mine == theirs or len(set(mine)) < 2
    only_mine, only_theirs = set(mine) - set(theirs), set(theirs) - set(mine)
    # One or two words replaced by others: those words are what the question is about.
    return not (0 < len(only_mine) <= _MAX_SWAP and 0 < len(only_theirs) <= _MAX_SWAP)
