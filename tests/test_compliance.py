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


def test_configured_keywords_match_as_written_or_spaced() -> None:
    """A configured keyword of two words matches with any spacing, or none."""
    keywords = Keywords.of(("STOP", "ARRET", "STOP PROMO"), ("START",), ())
    assert keywords.classify("stoppromo") is Keyword.STOP
    assert keywords.classify("Stop  Promo.") is Keyword.STOP
    assert keywords.classify("Arr\u00eat") is Keyword.STOP  # accents are not looked at
    assert keywords.classify("ARRE\u0301T") is Keyword.STOP  # nor how they are written
