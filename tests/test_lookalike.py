"""Look-alike punctuation: what each becomes, and that the result is GSM 03.38."""

from __future__ import annotations

from smppd.pdu.lookalike import _LOOKALIKES, plain
from smppd.pdu.text import is_gsm7


def test_every_lookalike_becomes_gsm_text() -> None:
    """Each replaced character is outside GSM 03.38 and its replacement inside it."""
    for code, replacement in _LOOKALIKES.items():
        assert not is_gsm7(chr(code)), hex(code)
        assert replacement == "" or is_gsm7(replacement), hex(code)


def test_plain_rewrites_punctuation_and_keeps_letters() -> None:
    text = (
        "\u2018a\u2019 \u201cb\u201d \u00abc\u00bb d\u2014e\u2026\tf\u00a0g\u200bh\u00ad"
        " \u00e9\u015f\u00df"
    )
    assert plain(text) == '\'a\' "b" "c" d-e... f gh \u00e9\u015f\u00df'
