"""YAML errors that do not quote secrets.

PyYAML's errors quote what they read: an unquoted password beginning with ! or * reads as a tag
or an alias, and the error names it. A leaf helper, for smppd's config and the fake SMSC's
scenarios alike.
"""

from __future__ import annotations

import re
from typing import Final

import yaml

# A line whose key names a secret: a YAML error there must not quote what it read (an
# unquoted password beginning with ! or * reads as a tag or an alias, and the error names it).
_SECRET_KEY: Final = re.compile(r"(?:password|secret)[\w-]*[\"']?\s*:", re.I)
_QUOTED: Final = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")


def yaml_problem(text: str, exc: yaml.MarkedYAMLError, reason: str | None = None) -> str:
    """`reason` (by default PyYAML's own), with what it quotes redacted if the error is on a
    secret's line of `text`."""
    if reason is None:
        reason = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
    lines = text.splitlines()
    for mark in (exc.problem_mark, exc.context_mark):
        if mark is not None and mark.line < len(lines) and _SECRET_KEY.search(lines[mark.line]):
            return _QUOTED.sub("<redacted>", reason)
    return reason
