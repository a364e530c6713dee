"""What a handler sees and returns (spec/patterns.md; runtime documentation in README).

A request handler receives a :class:`Request`. It returns the response ``data``, raises
:class:`~llmproto_ref.ExchangeError` for an error reply, or - for a streamed response - is an
(async) generator that yields each chunk's ``data`` and may end by yielding :class:`Final`.
Downstream calls made while a handler runs inherit its deadline and record the request as
their ``causation_id`` [DL-003].
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmproto_ref._clock import now_ms
from llmproto_ref._deadline import Deadline
from llmproto_ref._envelope import Envelope

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

    :param envelope: the received request.
    :param deadline: the request's deadline, if it had one.
    :param delivery_count: for work-queue jobs, which delivery this is (1 = first).
    """

    envelope: Envelope
    deadline: Deadline | None = None
    delivery_count: int = 1
    extras: dict[str, Any] = field(default_factory=dict)

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
    """One event being handled."""

    envelope: Envelope
    deadline: Deadline | None = None

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
