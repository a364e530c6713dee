"""At-most-once execution per idempotency key (spec/idempotency.md).

A service keeps, per ``(source, idempotency_key)``, whether the request is running or what
its terminal reply was, for ``ttl_ms`` and at most ``max_entries`` keys (least recently used
first out) [IDEM-004]. A duplicate of a finished request gets the stored reply without running
again [IDEM-001]; a duplicate of a running one gets ``IN_PROGRESS`` [IDEM-002]; the same key
with different content gets ``IDEMPOTENCY_KEY_REUSED`` [IDEM-003]. Failures that may succeed on
retry are forgotten so that a retry runs [IDEM-005].
"""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from llmproto_ref._envelope import Envelope

__all__ = ("Claim", "IdempotencyStore", "request_digest")


def request_digest(envelope: Envelope) -> str:
    """What makes two requests "the same content": type and payload, key order ignored."""
    member = "data_base64" if envelope.has("data_base64") else "data"
    payload: Any = envelope.members.get(member)
    body = orjson.dumps([envelope.type, member, payload], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


class Claim(enum.StrEnum):
    """The answer of :meth:`IdempotencyStore.claim`."""

    NEW = "new"  #: run it; call finish() or forget() afterwards
    RUNNING = "running"  #: the same request is executing now
    DONE = "done"  #: it ran; replay the stored reply
    CONFLICT = "conflict"  #: the key was used for different content


@dataclass(slots=True, kw_only=True)
class _Entry:
    digest: str
    expires_ms: int
    reply: dict[str, Any] | None = None  #: members of the stored terminal reply


class IdempotencyStore:
    """A bounded, expiring record of executed requests.

    :param max_entries: most keys kept; the least recently used goes first.
    :param ttl_ms: how long a key is remembered after it was claimed or finished.
    """

    def __init__(self, *, max_entries: int = 10_000, ttl_ms: int = 86_400_000) -> None:
        if max_entries < 1 or ttl_ms < 1:
            raise ValueError("max_entries and ttl_ms must be positive")
        self.max_entries = max_entries
        self.ttl_ms = ttl_ms
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self.executions: dict[tuple[str, str], int] = {}  #: how often each key was run

    def __len__(self) -> int:
        return len(self._entries)

    def claim(
        self, source: str, key: str, digest: str, now_ms: int
    ) -> tuple[Claim, dict[str, Any] | None]:
        """Look the key up and, if it is new, mark it running.

        :returns: the claim and, for ``DONE``, the stored reply members.
        """
        ident = (source, key)
        entry = self._entries.get(ident)
        if entry is not None and entry.expires_ms <= now_ms:
            del self._entries[ident]
            entry = None
        if entry is not None:
            self._entries.move_to_end(ident)
            if entry.digest != digest:
                return Claim.CONFLICT, None
            if entry.reply is None:
                return Claim.RUNNING, None
            return Claim.DONE, entry.reply
        self._entries[ident] = _Entry(digest=digest, expires_ms=now_ms + self.ttl_ms)
        self.executions[ident] = self.executions.get(ident, 0) + 1
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        if len(self.executions) > 4 * self.max_entries:
            self.executions.clear()
        return Claim.NEW, None

    def finish(self, source: str, key: str, reply: dict[str, Any], now_ms: int) -> None:
        """Store the terminal reply of a claimed key."""
        entry = self._entries.get((source, key))
        if entry is not None:
            entry.reply = reply
            entry.expires_ms = now_ms + self.ttl_ms

    def forget(self, source: str, key: str) -> None:
        """Drop a claimed key so that the next delivery runs it again (retryable failure)."""
        self._entries.pop((source, key), None)
