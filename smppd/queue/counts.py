"""Segment counts by (carrier, priority, client, state), kept up to date instead of counted.

Backends apply a delta per committed change, so `depth` (the API's backpressure check) is O(1)
and stats never scan the backlog. The SQLite backend persists the same deltas in the same
transaction as the rows, so the counts survive restarts without a count at open.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from smppd.queue.states import PENDING_STATES, SegmentState

CountKey = tuple[str, int, str, SegmentState]  # carrier, priority, client, state


class SegmentCounts:
    def __init__(self, initial: Iterable[tuple[CountKey, int]] = ()) -> None:
        self._n: dict[CountKey, int] = {}
        self._depth = 0
        self._client_depth: dict[str, int] = {}
        self.apply(dict(initial))

    def apply(self, delta: Mapping[CountKey, int]) -> None:
        for key, change in delta.items():
            if not change:
                continue
            value = self._n.get(key, 0) + change
            if value:
                self._n[key] = value
            else:
                del self._n[key]
            if key[3] in PENDING_STATES:
                self._depth += change
                client = key[2]
                left = self._client_depth.get(client, 0) + change
                if left:
                    self._client_depth[client] = left
                else:
                    del self._client_depth[client]

    def get(self, key: CountKey) -> int:
        return self._n.get(key, 0)

    @property
    def depth(self) -> int:
        """Segments not yet accepted by an SMSC (queued, scheduled, inflight)."""
        return self._depth

    def client_depth(self, client: str) -> int:
        """Of `depth`, the segments of `client`'s messages."""
        return self._client_depth.get(client, 0)

    def depth_by_client(self) -> dict[str, int]:
        return dict(self._client_depth)

    def total(self, state: SegmentState) -> int:
        return sum(n for key, n in self._n.items() if key[3] == state)

    def queued_keys(self) -> list[tuple[str, int, str]]:
        """(carrier, priority, client) triples that have due segments waiting."""
        return [key[:3] for key, n in self._n.items() if key[3] == SegmentState.QUEUED and n > 0]

    def by_state(self) -> dict[SegmentState, dict[int, int]]:
        out: dict[SegmentState, Counter[int]] = {}
        for (_, priority, _, state), n in self._n.items():
            out.setdefault(state, Counter())[priority] += n
        return {state: dict(by_priority) for state, by_priority in out.items()}

    def by_carrier(self) -> dict[str, dict[SegmentState, int]]:
        out: dict[str, Counter[SegmentState]] = {}
        for (carrier, _, _, state), n in self._n.items():
            out.setdefault(carrier, Counter())[state] += n
        return {carrier: dict(by_state) for carrier, by_state in out.items()}
