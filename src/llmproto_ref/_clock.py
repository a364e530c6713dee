"""Wall-clock readings for deadlines and timing stamps.

Deadlines are absolute instants shared between machines [DL-001], so they use the wall
clock, not a monotonic one; the sans-IO core takes these readings as arguments.
"""

from __future__ import annotations

import time

__all__ = ("now_ms", "now_us")


def now_ms() -> int:
    """Milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def now_us() -> int:
    """Microseconds since the Unix epoch (the unit of ``timing`` stamps)."""
    return time.time_ns() // 1_000
