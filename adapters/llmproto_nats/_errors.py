"""How the NATS client's failures become registry codes [NATS-029].

Every call into nats-py goes through :func:`translated`, so no exception of the client (nor an
``OSError`` or ``asyncio.TimeoutError`` from below it) crosses the transport contract: each
becomes a :class:`~llmproto_ref.TransportError` whose message names the operation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import nats.errors
import nats.js.errors

from llmproto_ref import ErrorCode, TransportError

__all__ = ("CLIENT_ERRORS", "error_code", "failure", "translated")

#: What a call into nats-py may raise: caught on the hot paths with ``except CLIENT_ERRORS``.
CLIENT_ERRORS = (nats.errors.Error, OSError, TimeoutError, EOFError)

#: JetStream API error codes that mean the server is out of room, not that we erred.
_JS_CAPACITY = frozenset({10023, 10028, 10047, 10077, 10078})
_UNAVAILABLE = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.NoServersError,
    nats.errors.TimeoutError,
    nats.errors.FlushTimeoutError,
    nats.errors.SlowConsumerError,
    nats.errors.AuthorizationError,
    nats.errors.SecureConnFailedError,
    nats.errors.SecureConnRequiredError,
    nats.errors.SecureConnWantedError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
)


def error_code(exc: BaseException) -> ErrorCode:
    """The registry code for a failure of the NATS client (or the socket under it)."""
    if isinstance(exc, nats.errors.MaxPayloadError):
        return ErrorCode.PAYLOAD_TOO_LARGE
    if isinstance(exc, nats.errors.NoRespondersError):
        return ErrorCode.NO_RESPONDERS
    if isinstance(exc, nats.errors.BadSubjectError | nats.errors.BadHeaderError):
        return ErrorCode.INVALID_PARAMS
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code in _JS_CAPACITY:
        return ErrorCode.OVERLOADED
    if isinstance(exc, nats.js.errors.NotFoundError):
        return ErrorCode.NOT_FOUND
    if isinstance(exc, (*_UNAVAILABLE, OSError, TimeoutError, EOFError)):
        return ErrorCode.UNAVAILABLE
    if isinstance(exc, nats.errors.Error):
        return ErrorCode.UNAVAILABLE  # the client's own failure: the outcome is unknown
    return ErrorCode.INTERNAL


def failure(exc: BaseException, doing: str) -> TransportError:
    """The :class:`TransportError` that stands for ``exc`` while ``doing`` something."""
    detail = str(exc) or type(exc).__name__
    return TransportError(error_code(exc), f"NATS: {doing} failed: {detail}")


@contextlib.contextmanager
def translated(doing: str) -> Iterator[None]:
    """Run a block of nats-py calls; re-raise their failures as :class:`TransportError`.

    :param doing: what the block does, for the message (``"publishing a request"``).
    """
    try:
        yield
    except TransportError:
        raise
    except (TimeoutError, nats.errors.Error, OSError, EOFError) as exc:
        detail = str(exc) or type(exc).__name__
        raise TransportError(error_code(exc), f"NATS: {doing} failed: {detail}") from exc
