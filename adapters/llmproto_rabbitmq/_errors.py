"""Every failure of the AMQP client as a transport error with a registry code [TRN-002].

:func:`translated` wraps each call into aiormq; what it lets through is only
:class:`~llmproto_ref.TransportError` and the caller's own cancellation. aiormq signals a
channel or connection that closed under a waiting call by cancelling the call's future; such a
cancellation, when nobody cancelled the calling task, is the connection's failure and becomes
``UNAVAILABLE``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import aiormq.exceptions
import pamqp.exceptions

from llmproto_ref import ErrorCode, TransportError

__all__ = ("translated", "unavailable")


def _describe(exc: BaseException) -> str:
    """``Type: text`` of an exception whose ``__str__`` may itself fail (some of aiormq's do)."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - describing an error must not raise another
        text = "(no description)"
    return f"{type(exc).__name__}: {text}"


def unavailable(what: str, cause: BaseException | None = None) -> TransportError:
    """An ``UNAVAILABLE`` error for ``what``, naming the cause when there is one."""
    detail = f": {_describe(cause)}" if cause is not None else ""
    return TransportError(ErrorCode.UNAVAILABLE, f"{what}{detail}")


def _code(exc: BaseException) -> ErrorCode:
    if isinstance(exc, aiormq.exceptions.PublishError):
        return ErrorCode.NO_RESPONDERS  # a returned publish: nothing took it
    if isinstance(exc, aiormq.exceptions.DeliveryError):
        return ErrorCode.OVERLOADED  # basic.nack: the broker refused to store it
    if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
        return ErrorCode.INVALID_PARAMS  # e.g. a queue that exists with other arguments
    if isinstance(exc, aiormq.exceptions.ConnectionResourceError):
        return ErrorCode.OVERLOADED
    if isinstance(exc, pamqp.exceptions.PAMQPException):
        return ErrorCode.INVALID_PARAMS  # a value the protocol cannot encode
    if isinstance(
        exc,
        aiormq.exceptions.AMQPError
        | aiormq.exceptions.ChannelInvalidStateError
        | ConnectionError
        | OSError
        | TimeoutError
        | EOFError
        | RuntimeError,  # aiormq: "<Connection> closed" and the like
    ):
        return ErrorCode.UNAVAILABLE
    return ErrorCode.INTERNAL


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn any client failure inside the block into a :class:`TransportError`.

    :param what: the operation, for the message (``"enqueue to 'jobs'"``).
    """
    try:
        yield
    except TransportError:
        raise
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the caller is being cancelled: let it
        raise unavailable(f"{what}: the channel closed", exc) from exc
    except Exception as exc:
        code = _code(exc)
        raise TransportError(code, f"{what}: {_describe(exc)}") from exc
