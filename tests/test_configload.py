"""smppd.configload: the generic walk from parsed YAML into typed dataclasses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smppd.configload import (
    LoadContext,
    Range,
    ValidationError,
    build,
    derive,
    format_key,
)

CTX = LoadContext(base_dir=Path("/etc/x"), environ={})


@dataclass(frozen=True, slots=True, kw_only=True)
class Leaf:
    weight: Annotated[float, Range(0, 1)] = 0.5
    label: str | None = None

    def __post_init__(self) -> None:
        if self.label == "bad":
            raise ValidationError("is bad", "label")


def _twice(values: Mapping[str, object]) -> object:
    return 2 * int(str(values["count"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Tree:
    count: Annotated[int, Range(1, 10)]
    double: int = field(metadata=derive(_twice))
    leaves: dict[str, Leaf] = field(default_factory=dict)
    files: tuple[Path, ...] = ()


def error(raw: object) -> str:
    with pytest.raises(ValidationError) as info:
        build(Tree, raw, CTX)
    return f"{format_key(info.value.path)}: {info.value.reason}"


def test_dicts_of_dataclasses_and_optionals_load() -> None:
    """dict[str, dataclass], `X | None`, int-for-float and derived fields all convert."""
    tree = build(Tree, {"count": 3, "leaves": {"a": {"weight": 1}, "b": {"label": None}}}, CTX)
    assert tree == Tree(count=3, double=6, leaves={"a": Leaf(weight=1.0), "b": Leaf()})
    assert build(Tree, {"count": 3, "double": 1}, CTX).double == 1


def test_paths_resolve_against_base_dir() -> None:
    """Relative paths join the base directory and are normalised; absolute ones stay."""
    tree = build(Tree, {"count": 1, "files": ["../a", "/b/./c"]}, CTX)
    assert tree.files == (Path("/etc/a"), Path("/b/c"))


def test_errors_carry_absolute_key_paths() -> None:
    """Failures deep in dicts and lists, and from __post_init__, name their full key path."""
    assert error({"count": 1, "leaves": {"a": {"weight": 2}}}) == (
        "leaves.a.weight: must be a number between 0 and 1, got 2"
    )
    assert error({"count": 1, "leaves": {"a b": {"label": "bad"}}}) == (
        "leaves['a b'].label: is bad"
    )
    assert error({"count": 1, "files": ["ok", ""]}) == "files[1]: must be a path, got ''"
    assert error({"count": 1, "leaves": {1: {}}}) == "leaves: keys must be strings, got 1"
    assert error({"count": True}) == "count: must be an integer between 1 and 10, got true"
    assert error({"count": 1, "leaves": {"a": {"weight": float("nan")}}}) == (
        "leaves.a.weight: must be a number between 0 and 1, got nan"
    )


@given(st.integers(-100, 100))
def test_range_accepts_exactly_its_interval(count: int) -> None:
    """An integer inside the range loads as is; anything outside is refused with the range."""
    if 1 <= count <= 10:
        assert build(Tree, {"count": count}, CTX).count == count
    else:
        assert error({"count": count}) == f"count: must be an integer between 1 and 10, got {count}"


def test_format_key() -> None:
    """Key paths read like the YAML they point into."""
    assert format_key(("carriers", 0, "tls", "ca_file")) == "carriers[0].tls.ca_file"
    assert format_key(()) == ""
