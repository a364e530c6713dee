"""What did not go the ordinary way, counted so an application or operator can read it [TRN-020]."""

from __future__ import annotations

from dataclasses import dataclass

from llmproto_ref import BrokerStats

__all__ = ("Counters",)


@dataclass(slots=True)
class Counters:
    """The transport's counters (mutable; :meth:`snapshot` gives the public view).

    The fields mean what :class:`llmproto_ref.BrokerStats` says; ``undeliverable`` counts
    replies the broker returned because no inbox queue had the address.
    """

    undeliverable: int = 0
    dropped_on_close: int = 0
    stale_settles: int = 0
    duplicates: int = 0
    expired_leases: int = 0
    dead_lettered: int = 0

    def snapshot(self) -> BrokerStats:
        """The counters so far."""
        return BrokerStats(
            undeliverable=self.undeliverable,
            dropped_on_close=self.dropped_on_close,
            stale_settles=self.stale_settles,
            duplicates=self.duplicates,
            expired_leases=self.expired_leases,
            dead_lettered=self.dead_lettered,
        )
