"""The exceptions llmproto raises, and what each one means on the wire.

Every exception carries the registry code (:class:`~llmproto_ref.ErrorCode`) that a
participant puts into the ``error`` reply it sends because of it::

    LlmpError                      base; ``code`` and ``message``
    ├── EnvelopeError              bytes or members that are not a valid envelope;
    │                              ``pointer`` (RFC 6901) and ``requirement`` (spec ID)
    ├── ExchangeError              an exchange ended without success: an error reply, the
    │                              deadline, a cancel, nobody serving the type; raise it in a
    │                              handler to send that error reply
    ├── TransportError             a binding operation failed (llmproto_ref._transport)
    └── ProtocolError              an exchange broke the protocol
        ├── LocalProtocolError     we were about to break it
        └── RemoteProtocolError    the peer broke it (e.g. a stream with a gap)

An unknown code received from a peer is kept as the raw string (see
:func:`~llmproto_ref.ErrorCode.parse`), so a newer peer never crashes an older one.
"""

from __future__ import annotations

from typing import Any

from llmproto_ref._registry import ErrorCode

__all__ = (
    "EnvelopeError",
    "ExchangeError",
    "LlmpError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
)


class LlmpError(Exception):
    """Base of every llmproto exception.

    :param code: the registry code, or the raw string of an unknown one.
    :param message: what went wrong, naming the problem.
    """

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode | str = ErrorCode.parse(code) if isinstance(code, str) else code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class EnvelopeError(LlmpError):
    """Bytes or members that are not a valid envelope.

    Raised by :func:`~llmproto_ref.decode` for received bytes and by
    :class:`~llmproto_ref.Envelope` for members built locally.

    :param pointer: JSON Pointer (RFC 6901) to the offending place; ``""`` is the whole document.
    :param requirement: the spec requirement ID the input breaks, e.g. ``"ENV-003"``.
    """

    def __init__(
        self, code: ErrorCode | str, message: str, *, pointer: str = "", requirement: str
    ) -> None:
        super().__init__(code, message)
        self.pointer = pointer
        self.requirement = requirement

    def __str__(self) -> str:
        where = self.pointer if self.pointer else "(document)"
        return f"{self.code} at {where} [{self.requirement}]: {self.message}"

    def detail(self) -> dict[str, Any]:
        """The ``llmp.pointer`` detail object an error reply carries for this problem."""
        return {"type": "llmp.pointer", "pointer": self.pointer, "requirement": self.requirement}


class ProtocolError(LlmpError):
    """An exchange broke the protocol; use one of the two subclasses."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError("raise LocalProtocolError or RemoteProtocolError, not ProtocolError")
        super().__init__(code, message)


class LocalProtocolError(ProtocolError):
    """We were about to break the protocol (a bug in the caller or in llmproto)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol, e.g. a chunk after the final one or a stream gap."""


class ExchangeError(LlmpError):
    """An exchange ended without success, or a handler's way of saying so.

    Raised by the client for an ``error`` reply, a passed deadline, a cancel or no responders;
    raised by a handler, it becomes the ``error`` reply (spec/errors.md).

    :param retryable: whether the same request may succeed later; the registry default if
        ``None``.
    :param retry_after_ms: the earliest useful retry, if known.
    :param details: typed detail objects (each with a ``type``).
    :param envelope: the received ``error`` reply, when there was one.
    """

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        *,
        retryable: bool | None = None,
        retry_after_ms: int | None = None,
        details: tuple[dict[str, Any], ...] = (),
        envelope: Any = None,
    ) -> None:
        super().__init__(code, message)
        code_ = self.code
        self.retryable = (
            retryable
            if retryable is not None
            else (code_.retryable if isinstance(code_, ErrorCode) else False)
        )
        self.retry_after_ms = retry_after_ms
        self.details = details
        self.envelope = envelope

    def to_error_object(self, *, origin: str | None = None) -> dict[str, Any]:
        """The ``error`` member of the reply this exception stands for."""
        obj: dict[str, Any] = {
            "code": str(self.code),
            "message": self.message[:4096],
            "retryable": self.retryable,
        }
        if self.retry_after_ms is not None:
            obj["retry_after_ms"] = self.retry_after_ms
        if self.details:
            obj["details"] = [dict(d) for d in self.details[:32]]
        received = getattr(self.envelope, "error", None)
        kept = received.get("origin") if received is not None else None
        if kept is not None:
            obj["origin"] = kept  # passed on unchanged from the participant that failed [ERR-011]
        elif origin is not None:
            obj["origin"] = origin
        return obj
