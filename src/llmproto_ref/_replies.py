"""Building the replies a service sends (spec/envelope.md, spec/errors.md).

Pure functions from a request (or what could be read of one) to reply envelopes, shared by
the request, stream and work-queue paths.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from llmproto_ref._envelope import LLMP_VERSION, Envelope, Kind
from llmproto_ref._errors import EnvelopeError, ExchangeError, LlmpError
from llmproto_ref._registry import ErrorCode

__all__ = ("error_reply", "is_error_kind", "rejection_reply", "reply_timing", "response")

#: ``type`` of an error reply to a message whose own ``type`` could not be read [ENV-036].
UNREADABLE_TYPE = "llmp.error"
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~:-]{0,127}$(?!\n)")
_TYPE = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,15}$(?!\n)")


def reply_timing(request: Envelope, received_us: int, handled_us: int) -> dict[str, int]:
    """The request's ``call``/``sent`` stamps plus the service's own [MET-001]."""
    timing = {k: int(v) for k, v in (request.timing or {}).items() if k in ("call", "sent")}
    timing["received"] = received_us
    timing["handled"] = handled_us
    return timing


def response(
    request: Envelope,
    *,
    source: str,
    data: Any,
    timing: Mapping[str, int] | None = None,
    finish_reason: str | None = None,
    usage: Mapping[str, int] | None = None,
) -> Envelope:
    """The ``response`` to ``request``."""
    return Envelope.new(
        kind=Kind.RESPONSE,
        type=request.type,
        source=source,
        correlation_id=request.id,
        data=data,
        timing=timing,
        finish_reason=finish_reason,
        usage=usage,
    )


def error_reply(
    request: Envelope,
    error: LlmpError,
    *,
    source: str,
    seq: int | None = None,
    timing: Mapping[str, int] | None = None,
) -> Envelope:
    """The ``error`` reply for ``request`` failing with ``error``."""
    exchange_error = (
        error if isinstance(error, ExchangeError) else ExchangeError(error.code, error.message)
    )
    obj = exchange_error.to_error_object(origin=source)
    if isinstance(error, EnvelopeError):
        obj["details"] = [error.detail()]
    return Envelope.new(
        kind=Kind.ERROR,
        type=request.type,
        source=source,
        correlation_id=request.id,
        error=obj,
        seq=seq,
        timing=timing,
    )


def rejection_reply(raw: bytes, error: EnvelopeError, *, source: str) -> Envelope:
    """The ``error`` reply for bytes that did not decode, naming what it can of them.

    The rejected message's ``id`` and ``type`` are read best-effort so the requester can
    correlate the rejection; where they cannot be read the reply has no ``correlation_id`` and
    the type ``llmp.error`` [ENV-036].
    """
    rid: str | None = None
    type_ = UNREADABLE_TYPE
    if error.code is not ErrorCode.PAYLOAD_TOO_LARGE:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            candidate_id, candidate_type = parsed.get("id"), parsed.get("type")
            if isinstance(candidate_id, str) and _IDENTIFIER.search(candidate_id):
                rid = candidate_id
            if (
                isinstance(candidate_type, str)
                and len(candidate_type) <= 255
                and _TYPE.search(candidate_type)
            ):
                type_ = candidate_type
    obj = ExchangeError(error.code, error.message).to_error_object(origin=source)
    obj["details"] = [error.detail()]
    if error.code is ErrorCode.UNSUPPORTED_VERSION:
        obj["details"].append({"type": "llmp.versions", "supported": [LLMP_VERSION]})  # [VER-003]
    return Envelope.new(kind=Kind.ERROR, type=type_, source=source, correlation_id=rid, error=obj)


def is_error_kind(raw: bytes) -> bool:
    """Whether undecodable bytes still read as an ``error`` (never answered [ENV-036])."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and parsed.get("kind") == "error"
