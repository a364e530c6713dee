"""The nonce cache: a signed message is accepted once (spec/security.md section Replay protection).

Theory of operation
-------------------
A receiver remembers the pair (``kid``, ``nonce``) of every signature it accepts, each until the
moment it keeps it for: the signature's ``expires`` plus the clock-skew allowance, after which
the time window rejects the signature anyway [SEC-021]. A pair seen again is a replay.

Memory is bounded [SEC-022]. When the cache is full it first drops the pairs whose moment has
passed; if none has, it drops the pair kept for the earliest moment and raises a *floor* to that
moment. From then on a signature kept no longer than the floor is rejected even if its pair is
unknown, since its pair may be one of those dropped. Because pairs are dropped in order of their
moments, every accepted pair whose moment lies above the floor is still in the cache: the cache
never lets a replay through, and under overload it narrows the window instead of growing.
A min-heap keyed by the moment finds the pair to drop in O(log n).

A work-queue job redelivered by the broker carries the same signature; a caller that knows the
delivery is a redelivery passes ``redelivery=True`` and a remembered pair is then accepted
[SEC-023] (its idempotency key, not the nonce, keeps it from running twice).

One cache can serve several :class:`~llmproto_ref.SecurityPolicy` objects; instances of one
service should share one cache, or one store implementing :class:`ReplayCache`, so that a replay
sent to another instance is caught too [SEC-024].
"""

from __future__ import annotations

import enum
import heapq
from typing import Protocol

__all__ = ("NonceCache", "Refusal", "ReplayCache")


class Refusal(enum.StrEnum):
    """Why a cache refuses a (``kid``, ``nonce``) pair."""

    REPLAYED = "replayed"  #: the pair was accepted before [SEC-021]
    FORGOTTEN = "forgotten"  #: kept no longer than the floor of a full cache [SEC-022]


class ReplayCache(Protocol):
    """What the policy needs from a nonce store (in memory, or shared by a service's instances)."""

    def admit(
        self, kid: str, nonce: str, keep_until_ms: int, now_ms: int, *, redelivery: bool = False
    ) -> Refusal | None:
        """Record the pair and return ``None``, or return why it is refused (nothing recorded)."""
        ...


class NonceCache:
    """A bounded in-memory :class:`ReplayCache`.

    :param max_entries: the most pairs it holds [SEC-022].
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._until: dict[tuple[str, str], int] = {}
        self._heap: list[tuple[int, str, str]] = []
        self.floor_ms = -1  #: signatures kept no longer than this are refused (cache was full)
        self.dropped = 0  #: pairs dropped before their moment because the cache was full

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, pair: object) -> bool:
        return pair in self._until

    def admit(
        self, kid: str, nonce: str, keep_until_ms: int, now_ms: int, *, redelivery: bool = False
    ) -> Refusal | None:
        """Accept the pair once; ``None`` if accepted, else the reason for refusing it.

        :param keep_until_ms: the signature's ``expires`` plus the clock-skew allowance.
        :param now_ms: the current time, for dropping pairs whose moment has passed.
        :param redelivery: the binding marks this delivery as a redelivery of a queued job.
        """
        pair = (kid, nonce)
        if pair in self._until:
            if redelivery:
                return None
            return Refusal.REPLAYED
        if keep_until_ms <= self.floor_ms:
            return Refusal.FORGOTTEN
        if len(self._until) >= self.max_entries:
            self._make_room(now_ms)
        self._until[pair] = keep_until_ms
        heapq.heappush(self._heap, (keep_until_ms, kid, nonce))
        return None

    def _make_room(self, now_ms: int) -> None:
        heap, until = self._heap, self._until
        while heap and heap[0][0] < now_ms:  # past its moment: the time window rejects it now
            _, kid, nonce = heapq.heappop(heap)
            del until[(kid, nonce)]
        while len(until) >= self.max_entries:
            moment, kid, nonce = heapq.heappop(heap)
            del until[(kid, nonce)]
            self.floor_ms = max(self.floor_ms, moment)
            self.dropped += 1
