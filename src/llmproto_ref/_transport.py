"""The transport contract: what every binding provides (spec/transport.md).

A transport moves opaque bytes between participants; it never parses envelopes. Addresses
are logical: the runtime names a pattern and an operation or event ``type`` (or a queue), and
the binding maps that onto subjects, exchanges and queues. Every method raises only
:class:`TransportError` (with a registry code) for transport failures; no broker client's
exception crosses this interface.

Operations, by pattern::

    request-response   serve(type_pattern, group)      -> Subscription of requests
                       send_request(type, body, reply_to)  may raise NO_RESPONDERS
                       open_inbox()                    -> Inbox (fresh reply address + Subscription)
                       send_reply(address, body)
    cancellation       publish_cancel(type, body)      broadcast to every instance serving type
                       serve_cancels(type_pattern)     -> Subscription (no group: every instance)
    events             publish_event(type, body)
                       subscribe_events(pattern, group) -> Subscription
    work queue         enqueue(queue, body, message_id)  returns after the broker confirmed
                       consume(queue, QueueOptions)    -> Consumer of Jobs
                       (ack / nack(delay) / terminate(reason) / extend_lease)
                       dead_letters(queue)             -> Consumer of the dead-letter queue

Patterns use ``*`` for exactly one dotted token and ``>`` for one or more trailing tokens.
"""

from __future__ import annotations

import enum
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, runtime_checkable

from llmproto_ref._errors import LlmpError
from llmproto_ref._registry import ErrorCode

__all__ = (
    "Capabilities",
    "Consumer",
    "Delivery",
    "Inbox",
    "Job",
    "Notice",
    "QueueOptions",
    "Subscription",
    "Transport",
    "TransportError",
    "pattern_matches",
    "validate_pattern",
    "validate_queue_name",
)


class TransportError(LlmpError):
    """A transport operation failed; ``code`` says how (spec/transport.md section Errors).

    Codes a binding uses: ``UNAVAILABLE`` (not connected, connection lost, outcome unknown),
    ``NO_RESPONDERS`` (nothing at the destination), ``PAYLOAD_TOO_LARGE`` (over the binding's
    limit), ``OVERLOADED`` (the broker refused for capacity), ``INVALID_PARAMS`` (a malformed
    address or pattern), ``INTERNAL`` (a bug in the binding).
    """


class Notice(enum.StrEnum):
    """A transport-level event delivered on a subscription instead of a message."""

    NO_RESPONDERS = "no_responders"  #: the request sent with this reply address reached nobody


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One message (or notice) received on a subscription.

    :param body: the envelope bytes, untouched.
    :param reply_to: the binding's native reply address, when the message had one; it lets a
        receiver answer even a message whose body cannot be parsed [ENV-036].
    :param headers: the binding's string headers (mirrored envelope members), if any.
    :param notice: set instead of a real message for transport notices.
    :param message_id: the message's binding-level id; for a notice, that of the message it
        concerns.
    """

    body: bytes
    reply_to: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    notice: Notice | None = None
    message_id: str | None = None


@runtime_checkable
class Subscription(Protocol):
    """An open subscription; iterate it for deliveries, close it to stop."""

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    async def aclose(self) -> None:
        """Stop receiving; deliveries not yet taken may be lost (they were never acked)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Inbox:
    """A fresh reply address and the subscription that receives what is sent to it."""

    address: str
    subscription: Subscription


@runtime_checkable
class Job(Protocol):
    """One delivery from a durable queue; settle it exactly once."""

    @property
    def body(self) -> bytes:
        """The envelope bytes."""

    @property
    def delivery_count(self) -> int:
        """1 on the first delivery, 2 on the first redelivery, and so on."""

    @property
    def reason(self) -> str | None:
        """On a dead-letter queue: why the job was dead-lettered; ``None`` elsewhere."""

    async def ack(self) -> None:
        """The job is done: remove it from the queue."""

    async def nack(self, *, delay_ms: int = 0) -> None:
        """The job failed: deliver it again after ``delay_ms`` (counts toward max_deliveries)."""

    async def terminate(self, *, reason: str) -> None:
        """Never deliver it again: move it to the dead-letter queue with ``reason``."""

    async def extend_lease(self) -> None:
        """Still working: restart the lease timer so the job is not redelivered."""


@runtime_checkable
class Consumer(Protocol):
    """An open consumer of a durable queue."""

    def __aiter__(self) -> AsyncIterator[Job]: ...

    async def aclose(self) -> None:
        """Stop taking jobs; unsettled jobs return to the queue, at the latest when their lease
        ends."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueOptions:
    """How a durable queue treats its jobs (spec/transport.md section Work queues).

    :param prefetch: most unsettled jobs this consumer holds at once.
    :param lease_ms: a job not settled or extended within this time is redelivered.
    :param max_deliveries: after this many deliveries a failing job is dead-lettered.
    """

    prefetch: int = 16
    lease_ms: int = 30_000
    max_deliveries: int = 5

    def __post_init__(self) -> None:
        if self.prefetch < 1 or self.lease_ms < 1 or self.max_deliveries < 1:
            raise ValueError("prefetch, lease_ms and max_deliveries must be positive")


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What a binding declares it supports; the conformance suite skips what is not declared.

    :param max_payload: largest body the binding carries, in bytes.
    """

    max_payload: int
    durable_queues: bool = True
    delayed_nack: bool = True
    lease_extension: bool = True
    dead_letters: bool = True
    wildcards: bool = True
    groups: bool = True
    no_responders: bool = True  #: reports NO_RESPONDERS instead of waiting for the deadline


class Transport(Protocol):
    """A binding: bytes in, bytes out (spec/transport.md).

    Use it as an async context manager; ``__aenter__`` connects and ``__aexit__`` drains and
    closes. Every method may raise :class:`TransportError`.
    """

    @property
    def capabilities(self) -> Capabilities:
        """What this binding supports."""

    @property
    def name(self) -> str:
        """A short label for reports, e.g. ``memory://default``."""

    async def __aenter__(self) -> Transport: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def serve(self, type_pattern: str, *, group: str) -> Subscription:
        """Receive requests for types matching ``type_pattern``, shared within ``group``."""

    async def send_request(
        self,
        type: str,
        body: bytes,
        *,
        reply_to: str,
        message_id: str,
    ) -> None:
        """Send a request for ``type``; replies go to ``reply_to``.

        :param message_id: the envelope's ``id``, mirrored into the binding's native id.
        :raises TransportError: ``NO_RESPONDERS`` when the binding knows at once that nobody
            serves ``type``; a binding that learns it later delivers
            :attr:`Notice.NO_RESPONDERS` with this ``message_id`` to the inbox instead.
        """

    async def open_inbox(self) -> Inbox:
        """A fresh reply address with its subscription."""

    async def send_reply(self, address: str, body: bytes) -> None:
        """Send a reply (response, error, chunk) to a reply address."""

    async def publish_cancel(self, type: str, body: bytes) -> None:
        """Broadcast a cancel to every instance serving ``type``."""

    async def serve_cancels(self, type_pattern: str) -> Subscription:
        """Receive every cancel for types matching ``type_pattern`` (no group)."""

    async def publish_event(self, type: str, body: bytes) -> None:
        """Publish an event; every subscriber group receives it once."""

    async def subscribe_events(self, pattern: str, *, group: str | None = None) -> Subscription:
        """Receive events matching ``pattern``; within ``group`` each event reaches one member."""

    async def enqueue(self, queue: str, body: bytes, *, message_id: str) -> None:
        """Store a job durably; return only once the broker has confirmed it.

        A second enqueue with the same ``message_id`` inside the binding's dedup window is a
        success that stores nothing.
        """

    async def consume(self, queue: str, options: QueueOptions) -> Consumer:
        """Take jobs from ``queue`` (competing with other consumers of it)."""

    async def dead_letters(self, queue: str) -> Consumer:
        """Take jobs from the dead-letter queue of ``queue``; :attr:`Job.reason` says why each
        one is there (``max_deliveries``, ``terminated: <reason>``, ``expired``)."""


_TOKEN = r"[A-Za-z0-9_-]{1,64}"
_NAME = re.compile(rf"^{_TOKEN}(\.{_TOKEN}){{0,15}}$(?!\n)")
_NAME_MAX = 255  # the envelope's type grammar, and AMQP's short-string limit
_PATTERN_TOKEN = re.compile(rf"^(?:{_TOKEN}|\*|>)$(?!\n)")


def validate_queue_name(name: str) -> None:
    """Queue names follow the envelope's ``type`` grammar.

    :raises TransportError: ``INVALID_PARAMS`` for a malformed name.
    """
    if len(name) > _NAME_MAX or _NAME.search(name) is None:
        raise TransportError(ErrorCode.INVALID_PARAMS, f"malformed queue or type name {name!r}")


def validate_pattern(pattern: str) -> None:
    """Check a subscription pattern: dotted tokens, ``*`` for one, ``>`` last for the rest.

    :raises TransportError: ``INVALID_PARAMS`` for a malformed pattern.
    """
    tokens = pattern.split(".")
    if (
        len(pattern) > _NAME_MAX
        or not 1 <= len(tokens) <= 16
        or any(_PATTERN_TOKEN.search(t) is None for t in tokens)
    ):
        raise TransportError(ErrorCode.INVALID_PARAMS, f"malformed pattern {pattern!r}")
    if ">" in tokens[:-1]:
        raise TransportError(ErrorCode.INVALID_PARAMS, f"'>' must be the last token: {pattern!r}")


def pattern_matches(pattern: str, name: str) -> bool:
    """Whether dotted ``name`` matches ``pattern`` (``*`` one token, ``>`` one or more)."""
    p_tokens = pattern.split(".")
    n_tokens = name.split(".")
    for index, token in enumerate(p_tokens):
        if token == ">":
            return len(n_tokens) > index
        if index >= len(n_tokens) or (token != "*" and token != n_tokens[index]):
            return False
    return len(p_tokens) == len(n_tokens)
