"""Fresh message identifiers and timestamps [ENV-011, ENV-012, ENV-016]."""

from __future__ import annotations

import os
import time

__all__ = ("format_timestamp", "new_id", "now_timestamp", "parse_timestamp_ms")


def new_id() -> str:
    """A UUIDv7 (RFC 9562) string: unique, and sortable by creation time to the millisecond."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_second_cache: tuple[int, str] = (-1, "")


def format_timestamp(ms: int) -> str:
    """``ms`` since the Unix epoch in the envelope's form, e.g. ``2026-01-31T23:59:59.000Z``."""
    global _second_cache
    second, milli = divmod(ms, 1000)
    cached_second, prefix = _second_cache
    if cached_second != second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, prefix)
    return f"{prefix}.{milli:03d}Z"


def now_timestamp() -> str:
    """The current time in the envelope's timestamp form."""
    return format_timestamp(time.time_ns() // 1_000_000)


_DAYS_BEFORE_MONTH = (0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def parse_timestamp_ms(value: str) -> int:
    """Milliseconds since the Unix epoch of an already validated envelope timestamp."""
    year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    y = year - 1
    days = y * 365 + y // 4 - y // 100 + y // 400 - 719_162  # days from 1970-01-01 to Jan 1
    days += _DAYS_BEFORE_MONTH[month] + (1 if leap and month > 2 else 0) + day - 1
    seconds = int(value[11:13]) * 3600 + int(value[14:16]) * 60 + int(value[17:19])
    return (days * 86_400 + seconds) * 1000 + int(value[20:23])
