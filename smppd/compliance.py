"""Keywords in inbound messages: STOP and its synonyms opt a number out, START opts it back in.

Matching ignores case and surrounding white space and punctuation, and looks at the whole message
only ("please stop" is not a keyword: carriers and regulators match the bare word). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
            frozenset(w.upper() for w in stop),
            frozenset(w.upper() for w in start),
            frozenset(w.upper() for w in help_),
        )

    def classify(self, text: str) -> Keyword | None:
        word = text.strip(" \t\r\n.!?,;:\"'").upper()
        if len(word) > 32:
            return None
        if word in self.stop:
            return Keyword.STOP
        if word in self.start:
            return Keyword.START
        if word in self.help:
            return Keyword.HELP
        return None


DEFAULT = Keywords.of(
    ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"),
    ("START", "UNSTOP"),
    ("HELP", "INFO"),
)
