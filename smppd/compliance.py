"""Keywords in inbound messages: STOP and its synonyms opt a number out, START opts it back in.

Matching looks at the whole message only ("please stop" is not a keyword: carriers and
regulators match the bare word), and at its letters and digits only, ignoring what handsets
and keyboards add: case, accents ("arrêt" is ARRET), compatibility forms (the fullwidth letters
of CJK keyboards), space, punctuation and symbols of any script wherever they are (smart
quotes, "。", an emoji after the word, "STOP-ALL" and "STOP ALL" are STOPALL), invisible format
characters (zero-width space, BOM), and Cyrillic or Greek capitals that look like Latin ones
(STOP typed with the Cyrillic letters TE, O and ER). A missed STOP is the costly side. Pure.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

# Longer texts are no keyword: not normalised at all, so that a long MO costs nothing here.
_MAX_TEXT = 64
_MAX_KEY = 32
# Capitals of other scripts drawn as Latin ones (after upper-casing, so lower case too): the
# Cyrillic, then the Greek.
_AS_LATIN = str.maketrans(
    "\u0410\u0412\u0415\u0405\u0406\u0408\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0423\u0425"
    "\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4\u03a5\u03a7",
    "ABESIJKMHOPCTYXABEZHIKMNOPTYX",
)


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
    """What a text is matched as: compatibility forms and accents gone (NFKD without the
    combining marks of the scripts whose marks are accents or optional vowel points), upper
    case, look-alike capitals as Latin, letters, digits and the other scripts' marks only."""
    chars = []
    keep_marks = False  # the last character is a letter whose marks are part of the word
    for c in unicodedata.normalize("NFKD", text):
        kind = unicodedata.category(c)[0]
        if kind in "LN":
            chars.append(c)
            keep_marks = not _has_accents(c)
        elif kind != "M":
            keep_marks = False  # an emoji's variation selector, a symbol's marks: not words
        elif keep_marks and not _VARIATION_SELECTOR.match(c):
            # In Devanagari, Thai or kana a mark is a vowel or a voicing, part of the word:
            # dropped, a configured STOP (or START) matched other words.
            chars.append(c)
    return "".join(chars).upper().translate(_AS_LATIN)


_VARIATION_SELECTOR = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")


def _has_accents(letter: str) -> bool:
    """Whether `letter` is of a script whose combining marks may be left out in writing: the
    accents of Latin, Greek and Cyrillic, the vowel points of Hebrew and Arabic."""
    point = ord(letter)
    return (
        point < 0x0780  # Latin, IPA, Greek, Cyrillic, Armenian, Hebrew, Arabic, Syriac
        or 0x08A0 <= point < 0x0900  # Arabic extended
        or 0x1C80 <= point < 0x1C90  # Cyrillic extended C
        or 0x1D00 <= point < 0x2000  # phonetic extensions, Latin and Greek extended
        or 0x2C60 <= point < 0x2C80  # Latin extended C
        or 0xA640 <= point < 0xA800  # Cyrillic extended B, Latin extended D
    )


DEFAULT = Keywords.of(
    ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"),
    ("START", "UNSTOP"),
    ("HELP", "INFO"),
)
