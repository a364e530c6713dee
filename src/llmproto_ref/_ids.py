"""Fresh message identifiers and timestamps [ENV-011, ENV-012, ENV-016].

Theory of operation
-------------------
Every message sent needs a UUIDv7, so :func:`new_id` is on the hot path. The random bits come
from ``os.urandom`` (a CSPRNG, as RFC 9562 section 6.9 recommends), read 4000 bytes at a time
into a per-thread buffer instead of one system call per id; a forked child drops the buffer it
inherited, so parent and child never hand out the same bits. The hex form of the millisecond
part changes once per millisecond and is kept; ``format_timestamp`` keeps the seconds it formatted
(the current one and those a timeout ahead, for deadlines).
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ("format_timestamp", "new_id", "now_timestamp", "parse_timestamp_ms")

_RANDOM_BYTES = 4000  # 400 ids per system call
_VARIANT = tuple("89ab"[byte >> 6] for byte in range(256))  # RFC 9562 variant 0b10 + 2 bits


class _Randomness(threading.local):
    """One thread's unread random bytes and the id prefix of its last millisecond."""

    def __init__(self) -> None:
        self.buffer = b""
        self.position = _RANDOM_BYTES
        self.ms = -1
        self.prefix = ""


_state = _Randomness()


def _forget_in_child() -> None:
    global _state
    _state = _Randomness()


os.register_at_fork(after_in_child=_forget_in_child)


def new_id() -> str:
    """A UUIDv7 (RFC 9562) string: unique, and sortable by creation time to the millisecond.

    48 bits of Unix milliseconds, the version ``7``, 12 random bits, the variant ``0b10``,
    62 random bits; 74 random bits in all.
    """
    state = _state
    at = state.position
    if at >= _RANDOM_BYTES:
        state.buffer = os.urandom(_RANDOM_BYTES)
        at = 0
    state.position = at + 10
    rand = state.buffer[at : at + 10]
    ms = time.time_ns() // 1_000_000
    if ms != state.ms:
        h = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
        state.prefix = f"{h[:8]}-{h[8:]}-7"
        state.ms = ms
    r = rand.hex()
    # r[0:3]: 12 bits; byte 2's top two bits pick the variant digit, its low nibble and byte 3
    # give the next three digits; bytes 4..9 the last twelve. r[3] and byte 2's bits 4-5 unused.
    return f"{state.prefix}{r[0:3]}-{_VARIANT[rand[2]]}{r[5:8]}-{r[8:]}"


_SECONDS: dict[int, str] = {}  #: formatted seconds: now, and deadlines a timeout ahead


def format_timestamp(ms: int) -> str:
    """``ms`` since the Unix epoch in the envelope's form, e.g. ``2026-01-31T23:59:59.000Z``."""
    second, milli = divmod(ms, 1000)
    prefix = _SECONDS.get(second)
    if prefix is None:
        if len(_SECONDS) >= 64:
            _SECONDS.clear()
        prefix = _SECONDS[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{prefix}.{milli:03d}Z"


def now_timestamp() -> str:
    """The current time in the envelope's timestamp form."""
    return format_timestamp(time.time_ns() // 1_000_000)


_DAYS_BEFORE_MONTH = (0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


_SECOND_MS: dict[str, int] = {}  #: "YYYY-MM-DDTHH:MM:SS" -> its ms since the epoch


def parse_timestamp_ms(value: str) -> int:
    """Milliseconds since the Unix epoch of an already validated envelope timestamp."""
    second = value[:19]
    at = _SECOND_MS.get(second)
    if at is None:
        year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        y = year - 1
        days = y * 365 + y // 4 - y // 100 + y // 400 - 719_162  # days from 1970-01-01 to Jan 1
        days += _DAYS_BEFORE_MONTH[month] + (1 if leap and month > 2 else 0) + day - 1
        seconds = int(value[11:13]) * 3600 + int(value[14:16]) * 60 + int(value[17:19])
        at = (days * 86_400 + seconds) * 1000
        if len(_SECOND_MS) >= 256:
            _SECOND_MS.clear()
        _SECOND_MS[second] = at
    return at + int(value[20:23])
