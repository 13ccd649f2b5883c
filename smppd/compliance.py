"""Keywords in inbound messages: STOP and its synonyms opt a number out, START opts it back in.

Matching looks at the whole message only ("please stop" is not a keyword: carriers and
regulators match the bare word), and ignores what handsets and keyboards add around it: case,
accents ("arrêt" is ARRET), compatibility forms (the fullwidth letters of CJK keyboards),
surrounding space and punctuation of any script (smart quotes, "。"), invisible format
characters (zero-width space, BOM) and the spaces between words ("STOP ALL" is STOPALL). Pure.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import StrEnum

# Longer texts are no keyword: not normalised at all, so that a long MO costs nothing here.
_MAX_TEXT = 64
_MAX_KEY = 32
_EDGE = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})  # and any punctuation (P*)


class Keyword(StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"


@dataclass(frozen=True, slots=True)
class Keywords:
    stop: frozenset[str]
    start: frozenset[str]
    help: frozenset[str]

    @classmethod
    def of(cls, stop: tuple[str, ...], start: tuple[str, ...], help_: tuple[str, ...]) -> Keywords:
        return cls(
            frozenset(map(keyword_key, stop)),
            frozenset(map(keyword_key, start)),
            frozenset(map(keyword_key, help_)),
        )

    def classify(self, text: str) -> Keyword | None:
        if len(text) > _MAX_TEXT:
            return None
        word = keyword_key(text)
        if len(word) > _MAX_KEY:
            return None
        if word in self.stop:
            return Keyword.STOP
        if word in self.start:
            return Keyword.START
        if word in self.help:
            return Keyword.HELP
        return None


def keyword_key(text: str) -> str:
    """What a text is matched as: compatibility forms and accents gone (NFKD without its
    combining marks), upper case, without the edges' space, punctuation and format
    characters, and without spaces or format characters inside."""
    decomposed = unicodedata.normalize("NFKD", text)
    chars = "".join(c for c in decomposed if unicodedata.category(c) != "Mn").upper()
    start, end = 0, len(chars)
    while start < end and _edge(chars[start]):
        start += 1
    while end > start and _edge(chars[end - 1]):
        end -= 1
    return "".join(c for c in chars[start:end] if unicodedata.category(c) not in _EDGE)


def _edge(char: str) -> bool:
    category = unicodedata.category(char)
    return category in _EDGE or category[0] == "P"


DEFAULT = Keywords.of(
    ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"),
    ("START", "UNSTOP"),
    ("HELP", "INFO"),
)
