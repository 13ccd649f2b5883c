"""`@record`: the value types built per message and per PDU.

A record is frozen to the type checker (mypy rejects assigning a field, as for
`dataclass(frozen=True)`) but a plain slotted dataclass at run time. A frozen dataclass sets each
field through `object.__setattr__`, which makes construction about four times slower (1.0 vs
0.25 us for eight fields); a message builds a dozen records between the API and its receipt, so
that was a tenth of the daemon's CPU time. Records keep frozen dataclasses' equality and hash.

Configuration stays `dataclass(frozen=True)`: it is built once and shared, and there the
run-time check costs nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

__all__ = ["record"]

_T = TypeVar("_T")


@overload
def record(cls: type[_T], /) -> type[_T]: ...
@overload
def record(*, kw_only: bool = False) -> Callable[[type[_T]], type[_T]]: ...
@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def record(cls: type[_T] | None = None, /, *, kw_only: bool = False) -> Any:
    def wrap(cls: type[_T]) -> type[_T]:
        return dataclasses.dataclass(cls, slots=True, unsafe_hash=True, kw_only=kw_only)

    return wrap if cls is None else wrap(cls)
