"""What a handler sees and returns (spec/patterns.md; runtime documentation in README).

A request handler receives a :class:`Request`. It returns the response ``data``, raises
:class:`~llmproto_ref.ExchangeError` for an error reply, or - for a streamed response - is an
(async) generator that yields each chunk's ``data`` and may end by yielding :class:`Final`.
Downstream calls made while a handler runs inherit its deadline and record the request as
their ``causation_id`` [DL-003].

With a :class:`~llmproto_ref.SecurityPolicy` on the service, the envelope a handler sees is the
policy's view of the message: without ``auth``, so a handler has no token it could pass on
[SEC-032], and with an encrypted payload decrypted; :attr:`Request.verified` says who signed it
and what the bearer token granted.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmproto_ref._clock import now_ms
from llmproto_ref._deadline import Deadline
from llmproto_ref._envelope import Envelope

if TYPE_CHECKING:
    from llmproto_ref._policy import Verified

__all__ = ("Event", "Final", "Request", "current_request")


@dataclass(frozen=True, slots=True, kw_only=True)
class Final:
    """The last item a streaming handler yields: the final chunk's members.

    :param data: optional last piece of payload.
    :param finish_reason: why generation stopped, e.g. ``stop`` or ``length``.
    :param usage: token counts, e.g. ``{"input_tokens": 12, "output_tokens": 40}``.
    """

    data: Any = None
    finish_reason: str = "stop"
    usage: Mapping[str, int] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One request being handled.

    :param envelope: the received request (the security policy's view, when there is one).
    :param deadline: the request's deadline, if it had one.
    :param delivery_count: for work-queue jobs, which delivery this is (1 = first).
    :param verified: what the service's security policy established (the signing key, the
        bearer token's claims); ``None`` when the service has no policy.
    """

    envelope: Envelope
    deadline: Deadline | None = None
    delivery_count: int = 1
    extras: dict[str, Any] = field(default_factory=dict)
    verified: Verified | None = None

    @property
    def data(self) -> Any:
        """The request's JSON payload."""
        return self.envelope.data

    @property
    def type(self) -> str:
        """The operation name."""
        return self.envelope.type

    @property
    def source(self) -> str:
        """Who sent it."""
        return self.envelope.source

    def remaining_s(self) -> float | None:
        """Seconds left before the deadline, or ``None`` without one."""
        if self.deadline is None:
            return None
        return self.deadline.remaining_ms(now_ms()) / 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One event being handled.

    :param verified: what the service's security policy established, as for a request.
    """

    envelope: Envelope
    deadline: Deadline | None = None
    verified: Verified | None = None

    @property
    def data(self) -> Any:
        """The event's JSON payload."""
        return self.envelope.data

    @property
    def type(self) -> str:
        """The event name."""
        return self.envelope.type


_CURRENT: contextvars.ContextVar[Request | Event | None] = contextvars.ContextVar(
    "llmproto_current_request", default=None
)


def current_request() -> Request | Event | None:
    """The request or event whose handler is running in this task, if any."""
    return _CURRENT.get()


def enter_request(handled: Request | Event) -> contextvars.Token[Request | Event | None]:
    """Make ``handled`` the current one (the service does this around a handler)."""
    return _CURRENT.set(handled)


def leave_request(token: contextvars.Token[Request | Event | None]) -> None:
    """Undo :func:`enter_request`."""
    _CURRENT.reset(token)
