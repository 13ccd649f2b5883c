"""Which inbound texts are STOP, START or HELP: the forms handsets and keyboards send."""

from __future__ import annotations

import pytest

from smppd.compliance import DEFAULT, Keyword, Keywords


@pytest.mark.parametrize(
    "text",
    [
        "STOP",
        "stop.",
        " \r\nUnsubscribe\r\n",
        "Stop all",  # STOPALL, however spaced
        "STOP\tALL!",
        "\u201cSTOP\u201d",  # smart quotes, as iOS types them
        "\u2018Stop\u2019",
        "STOP\u00a0",  # no-break space
        "Stop\u200b",  # zero-width space
        "\ufeffSTOP",  # a byte order mark some UCS-2 handsets lead with
        "\uff33\uff34\uff2f\uff30",  # fullwidth, from CJK keyboards
        "STOP\u3002",  # ideographic full stop
        "(STOP)",
        "stop-",
        "\u00bfStop?",
        "stop \U0001f6d1",  # an emoji after it (or before), with its skin tone or not
        "Stop \U0001f64f\U0001f3fd",
        "\U0001f6d1stop",
        "STOP-ALL",
        "S\u0422\u041e\u0420",  # Cyrillic TE, O, ER
        "\u0455\u0442\u043e\u0440",  # the same in lower case
        "ST\u039fP",  # Greek omicron
    ],
)
def test_stop_as_handsets_write_it(text: str) -> None:
    assert DEFAULT.classify(text) is Keyword.STOP


@pytest.mark.parametrize(
    "text", ["please stop", "stopp", "don't stop", "STOP" + " " * 70 + "now", "", "...", "\u200b"]
)
def test_other_texts_are_no_keyword(text: str) -> None:
    assert DEFAULT.classify(text) is None


def test_start_and_help_are_told_apart() -> None:
    assert DEFAULT.classify("Start!") is Keyword.START
    assert DEFAULT.classify("un stop") is Keyword.START
    assert DEFAULT.classify("un-stop") is Keyword.START
    assert DEFAULT.classify("help?") is Keyword.HELP


def test_keywords_in_other_scripts_keep_their_vowels_and_voicing() -> None:
    """The marks of Devanagari, Thai or kana are vowels and voicing, not accents: a Hindi,
    Thai or Japanese STOP (or START, which lifts an opt-out) matches itself and not every word
    of its consonants."""
    keywords = Keywords.of(
        ("\u0930\u094b\u0915\u094b", "\u0e2b\u0e22\u0e38\u0e14", "\u30b9\u30c8\u30c3\u30d7"),
        ("\u0936\u0941\u0930\u0942",),
        (),
    )
    assert keywords.classify("\u0930\u094b\u0915\u094b") is Keyword.STOP  # roko: stop
    assert keywords.classify("\u0930\u0941\u0915\u094b") is None  # ruko: wait
    assert keywords.classify("\u0e2b\u0e22\u0e38\u0e14") is Keyword.STOP  # yut: stop
    assert keywords.classify("\u0e2b\u0e22\u0e14") is None  # yot: a drop
    assert keywords.classify("\u30b9\u30c8\u30c3\u30d7") is Keyword.STOP  # sutoppu
    assert keywords.classify("\uff7d\uff84\uff6f\uff8c\uff9f") is Keyword.STOP  # half-width
    assert keywords.classify("\u30b9\u30c9\u30c3\u30d7") is None  # sudoppu
    assert keywords.classify("\u0936\u0941\u0930\u0942") is Keyword.START  # shuru: start
    assert keywords.classify("\u0936\u0947\u0930") is None  # sher: a lion
    arabic = Keywords.of(("\u0642\u0641",), (), ())  # qif: stop, its vowel points optional
    assert arabic.classify("\u0642\u0650\u0641") is Keyword.STOP
    # An emoji after the word, as keyboards send it with a variation selector (a mark): no
    # part of the word, whatever the script before it.
    for emoji in ("\u2764\ufe0f", " \u2714\ufe0f", "\u263a\ufe0f", "\u270c\ufe0f\U0001f3fd"):
        assert keywords.classify("\u0930\u094b\u0915\u094b" + emoji) is Keyword.STOP
        assert keywords.classify("\u30b9\u30c8\u30c3\u30d7" + emoji) is Keyword.STOP
        assert DEFAULT.classify("STOP" + emoji) is Keyword.STOP
    cjk = Keywords.of(("\u505c\u6b62",), (), ())  # tingzhi: stop
    assert cjk.classify("\u505c\u6b62 \u2714\ufe0f") is Keyword.STOP


def test_configured_keywords_match_as_written_or_spaced() -> None:
    """A configured keyword of two words matches with any spacing, or none."""
    keywords = Keywords.of(("STOP", "ARRET", "STOP PROMO"), ("START",), ())
    assert keywords.classify("stoppromo") is Keyword.STOP
    assert keywords.classify("Stop  Promo.") is Keyword.STOP
    assert keywords.classify("Arr\u00eat") is Keyword.STOP  # accents are not looked at
    assert keywords.classify("ARRE\u0301T") is Keyword.STOP  # nor how they are written
