"""Absolute deadlines (spec/deadlines.md).

A deadline is a point in time, never a duration: every hop forwards the same instant and
enforces it against its own clock [DL-001]. The core never reads a clock; callers pass
``now_ms`` (milliseconds since the Unix epoch), which keeps it deterministic under test.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmproto_ref._ids import format_timestamp, parse_timestamp_ms

__all__ = ("Deadline",)


@dataclass(frozen=True, slots=True, order=True)
class Deadline:
    """An instant after which nobody waits for an exchange's outcome.

    :param at_ms: milliseconds since the Unix epoch.
    """

    at_ms: int

    @classmethod
    def from_timestamp(cls, value: str) -> Deadline:
        """From an envelope's (already validated) ``deadline`` member."""
        return cls(parse_timestamp_ms(value))

    @classmethod
    def after(cls, now_ms: int, timeout_s: float) -> Deadline:
        """``timeout_s`` seconds after ``now_ms``."""
        return cls(now_ms + max(0, round(timeout_s * 1000)))

    def to_timestamp(self) -> str:
        """The envelope form of this deadline."""
        return format_timestamp(self.at_ms)

    def remaining_ms(self, now_ms: int) -> int:
        """Milliseconds left, never negative."""
        return max(0, self.at_ms - now_ms)

    def expired(self, now_ms: int) -> bool:
        """Whether the deadline has passed at ``now_ms``."""
        return now_ms >= self.at_ms

    def earliest(self, other: Deadline | None) -> Deadline:
        """The earlier of the two (a hop may shorten a deadline, never extend it) [DL-002]."""
        return self if other is None or self.at_ms <= other.at_ms else other
