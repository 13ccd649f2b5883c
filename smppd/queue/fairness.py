"""Fair sharing of one claim between clients of the same priority.

A claim takes round-robin quanta from each client with due segments, so a client with a backlog
of a million cannot starve one with ten: each active client gets an equal share of every claim,
and the client order rotates between claims so the remainder does not always favour the same one.
Pure: the backend supplies `fetch`, which claims a client's oldest due segments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


def take_fairly(
    clients: Sequence[str], limit: int, fetch: Callable[[str, int], Sequence[T]]
) -> tuple[list[T], str | None]:
    """Up to `limit` items shared round-robin between `clients`, visited in the given order.

    `fetch(client, n)` returns up to n of the client's items, fewer only when it has no more.
    Returns the items interleaved (first of each client, then second of each, ...), and the last
    client served in the final round: the next claim should start after it.
    """
    taken: dict[str, list[T]] = {client: [] for client in clients}
    active = list(clients)
    remaining = limit
    last: str | None = None
    while remaining > 0 and active:
        quantum = max(1, remaining // len(active))
        still_active = []
        for client in active:
            want = min(quantum, remaining)
            if want == 0:
                still_active.append(client)
                continue
            got = fetch(client, want)
            taken[client].extend(got)
            remaining -= len(got)
            if got:
                last = client
            if len(got) == want:
                still_active.append(client)
        active = still_active
    return interleave(taken[client] for client in clients), last


def interleave(lists: Iterable[Sequence[T]]) -> list[T]:
    """The first item of each list, then the second of each, and so on."""
    pending = [items for items in lists if items]
    if len(pending) == 1:
        return list(pending[0])
    out: list[T] = []
    rank = 0
    while pending:
        out.extend(items[rank] for items in pending)
        rank += 1
        pending = [items for items in pending if rank < len(items)]
    return out


def rotate_after(clients: Sequence[str], cursor: str | None) -> list[str]:
    """Sorted `clients` starting with the first one after `cursor` (wrapping around)."""
    ordered = sorted(clients)
    if cursor is None:
        return ordered
    after = [client for client in ordered if client > cursor]
    return after + [client for client in ordered if client <= cursor]
