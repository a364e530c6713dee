"""Bytes to envelopes and back (spec/envelope.md sections Encoding and Limits).

:func:`decode` applies the rules in the order the spec gives them: size before parsing,
strict JSON, the envelope schema, then the receiver's own policy (``critical``).
"""

from __future__ import annotations

import orjson

from llmproto_ref._envelope import Envelope
from llmproto_ref._errors import EnvelopeError
from llmproto_ref._limits import DEFAULT_LIMITS, Limits
from llmproto_ref._registry import ErrorCode
from llmproto_ref._strictjson import read_json
from llmproto_ref._validate import validate_members

__all__ = ("MEDIA_TYPE", "decode", "encode")

#: Media type of an encoded envelope.
MEDIA_TYPE = "application/llmp+json"


def decode(
    raw: bytes | bytearray | memoryview | str,
    *,
    limits: Limits = DEFAULT_LIMITS,
    understood: frozenset[str] = frozenset(),
) -> Envelope:
    """Parse and validate one received envelope.

    :param raw: the message body; ``str`` is taken as its UTF-8 encoding.
    :param limits: the receiver's size and depth limits.
    :param understood: extension names this receiver implements, for ``critical`` [ENV-031].
    :raises EnvelopeError: with the registry code, the JSON Pointer and the requirement ID.
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    elif not isinstance(raw, bytes):
        raw = bytes(raw)
    members = read_json(raw, limits)
    validate_members(members)
    critical = members.get("critical")
    if critical is not None:
        for index, name in enumerate(critical):
            if name not in understood:
                raise EnvelopeError(
                    ErrorCode.UNSUPPORTED_EXTENSION,
                    f"critical extension {name!r} is not understood by this receiver",
                    pointer=f"/critical/{index}",
                    requirement="ENV-031",
                )
    return Envelope._wrap(members)  # noqa: SLF001 - the codec owns the adopt path


def encode(envelope: Envelope, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The envelope's UTF-8 JSON form, without insignificant whitespace.

    :raises EnvelopeError: ``PAYLOAD_TOO_LARGE`` if the result exceeds ``limits`` [ENV-006].
    """
    body = orjson.dumps(envelope._members)  # noqa: SLF001 - the codec owns the wire form
    if len(body) > limits.max_envelope_bytes:
        raise EnvelopeError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"encoded envelope is {len(body)} bytes, the limit is {limits.max_envelope_bytes}",
            requirement="ENV-006",
        )
    return body
