"""Building the replies a service sends (spec/envelope.md, spec/errors.md).

Pure functions from a request (or what could be read of one) to reply envelopes, shared by
the request, stream and work-queue paths. :func:`response` and :func:`chunk` run once per
message, so they assemble the members in the constructor's order and check one by one only
what the handler supplied (``finish_reason``, ``usage``) and the service's ``source``; the rest
is valid by construction: the request's ``id`` and ``type`` passed validation when it was
built or decoded, ``new_id``/``now_timestamp`` produce valid values and the stamps are integers
(see :meth:`Envelope._assembled`). Error replies are rare and take the validating constructor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from llmproto_ref._envelope import LLMP_VERSION, Envelope, Kind, _plain
from llmproto_ref._errors import EnvelopeError, ExchangeError, LlmpError
from llmproto_ref._ids import new_id, now_timestamp
from llmproto_ref._registry import ErrorCode
from llmproto_ref._validate import validate_member

__all__ = (
    "chunk",
    "error_reply",
    "member_reply_to",
    "peek",
    "rejection_reply",
    "reply_timing",
    "response",
)

#: ``type`` of an error reply to a message whose own ``type`` could not be read [ENV-036].
UNREADABLE_TYPE = "llmp.error"
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~:-]{0,127}$(?!\n)")
_TYPE = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,15}$(?!\n)")


def reply_timing(request: Envelope, received_us: int, handled_us: int) -> dict[str, int]:
    """The request's ``call``/``sent`` stamps plus the service's own [MET-001]."""
    timing: dict[str, int] = {}
    stamps = request.timing
    if stamps:
        for name, stamp in stamps.items():
            if name == "call" or name == "sent":  # noqa: PLR1714 - faster than a tuple here
                timing[name] = int(stamp)
    timing["received"] = received_us
    timing["handled"] = handled_us
    return timing


def _reply_members(kind: str, request: Envelope, source: str) -> dict[str, Any]:
    """The header of a reply to ``request``; ``source`` is checked (cheap: it repeats)."""
    validate_member("source", source)
    return {
        "llmp": LLMP_VERSION,
        "id": new_id(),
        "kind": kind,
        "type": request.type,
        "source": source,
        "time": now_timestamp(),
        "correlation_id": request.id,
    }


def _add_completion(
    members: dict[str, Any], finish_reason: str | None, usage: Mapping[str, int] | None
) -> None:
    """The handler's ``finish_reason`` and ``usage``, each checked as the constructor would."""
    if finish_reason is not None:
        validate_member("finish_reason", finish_reason)
        members["finish_reason"] = finish_reason
    if usage is not None:
        counts = _plain(usage)
        validate_member("usage", counts)
        members["usage"] = counts


def _add_timing(members: dict[str, Any], timing: Mapping[str, int] | None) -> None:
    if timing is not None:
        stamps = _plain(timing)
        validate_member("timing", stamps)  # integers: the quick path of the check
        members["timing"] = stamps


def response(
    request: Envelope,
    *,
    source: str,
    data: Any,
    timing: Mapping[str, int] | None = None,
    finish_reason: str | None = None,
    usage: Mapping[str, int] | None = None,
) -> Envelope:
    """The ``response`` to ``request``.

    :raises EnvelopeError: if ``source``, ``finish_reason``, ``usage`` or ``timing`` is invalid.
    """
    members = _reply_members("response", request, source)
    _add_completion(members, finish_reason, usage)
    if data is not None:
        members["data"] = _plain(data)
    _add_timing(members, timing)
    return Envelope._assembled(members)  # noqa: SLF001 - valid by construction, see above


def chunk(
    request: Envelope,
    *,
    source: str,
    seq: int,
    data: Any,
    final: bool = False,
    finish_reason: str | None = None,
    usage: Mapping[str, int] | None = None,
    timing: Mapping[str, int] | None = None,
) -> Envelope:
    """Chunk ``seq`` of the stream answering ``request``; ``final`` ends the stream.

    :param seq: the chunk's position, counted by the service from 0.
    :raises EnvelopeError: if ``source``, ``finish_reason``, ``usage`` or ``timing`` is invalid,
        or ``finish_reason``/``usage`` is given for a chunk that is not final [ENV-023].
    """
    members = _reply_members("chunk", request, source)
    validate_member("seq", seq)
    members["seq"] = seq
    if final:
        members["final"] = True
    _add_completion(members, finish_reason, usage)
    if data is not None:
        members["data"] = _plain(data)
    _add_timing(members, timing)
    if not final and (finish_reason is not None or usage is not None):  # after the values
        name = "finish_reason" if finish_reason is not None else "usage"
        raise EnvelopeError(
            ErrorCode.INVALID_ENVELOPE,
            f"{name!r} belongs on the final chunk only",
            pointer=f"/{name}",
            requirement="ENV-023",
        )
    return Envelope._assembled(members)  # noqa: SLF001 - valid by construction, see above


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


def peek(raw: bytes, error: EnvelopeError) -> dict[str, Any] | None:
    """The top-level object of bytes that did not decode, read once and best-effort.

    ``None`` when the bytes are not a JSON object, or when they were refused for their size:
    an oversize body is never parsed [ENV-005].
    """
    if error.code is ErrorCode.PAYLOAD_TOO_LARGE:
        return None
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def member_reply_to(parsed: dict[str, Any] | None) -> str | None:
    """The ``reply_to`` member of a rejected message, when it is itself valid [ENV-036]."""
    if parsed is None:
        return None
    value = parsed.get("reply_to")
    try:
        validate_member("reply_to", value)
    except EnvelopeError:
        return None
    return value if isinstance(value, str) else None


def rejection_reply(
    raw: bytes, error: EnvelopeError, *, source: str, parsed: dict[str, Any] | None = None
) -> Envelope:
    """The ``error`` reply for bytes that did not decode, naming what it can of them.

    The rejected message's ``id`` and ``type`` are read best-effort so the requester can
    correlate the rejection; where they cannot be read the reply has no ``correlation_id`` and
    the type ``llmp.error`` [ENV-036].

    :param parsed: the bytes as :func:`peek` read them, so they are parsed once.
    """
    rid: str | None = None
    type_ = UNREADABLE_TYPE
    if parsed is None:
        parsed = peek(raw, error)
    if parsed is not None:
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
